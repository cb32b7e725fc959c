"""The tools' routes (``specs/openapi/tools.yaml``), over :class:`~orchestra.tools.Tools`:

- ``POST /v1/tools/http_fetch``: fetch a URL behind ``[tools.policy]``;
- ``POST /v1/tools/search``: ask the configured SearXNG;
- ``GET /v1/tools/audit``: the audit of every call, newest first, paged and filtered.

Bodies and query strings are strict (every bad or unknown field named at once, 400); the
caller's identity (``g.who``, from the auth gate) and correlation id go with every call
into its audit row. With ``tools.enabled = false`` every route answers 404 first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from quart import Blueprint, Response, g, request

from orchestra.errors import ErrorCode, Refusal
from orchestra.http.bodies import count_check, json_response, read_body
from orchestra.http.context import Actors
from orchestra.tools import AuditQuery, FetchRequest, SearchRequest, Tools
from orchestra.tools.audit import DECISIONS, MAX_PAGE

ID: Final = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9._:-]{1,128}")
"""A session's or task's id, as the data plane writes them."""
HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
HEADER_VALUE: Final = re.compile(r"([\x21-\x7e]([\t\x20-\x7e]*[\x21-\x7e])?)?")
"""Visible ASCII, inner spaces and tabs, at most :data:`MAX_HEADER_VALUE` characters."""
MAX_URL: Final = 8192
MAX_HEADERS: Final = 64
MAX_HEADER_VALUE: Final = 8192
MAX_QUERY: Final = 1000
TOOLS: Final = ("http_fetch", "search")


def _integer(low: int, high: int | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return "must be an integer"
        if value < low or (high is not None and value > high):
            return f"must be at least {low}" if high is None else f"must be {low} to {high}"
        return None

    return check


def _text(max_len: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            return "must be a non-empty string"
        if len(value) > max_len:
            return f"must be at most {max_len} characters"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must not hold lone surrogates"
        return None

    return check


_ID_PROBLEM: Final = "must be 1 to 128 letters, digits, '.', '_', ':' or '-' (not . or ..)"


def _id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not ID.fullmatch(value):
        return f"must be null or {_ID_PROBLEM.removeprefix('must be ')}"
    return None


def _method(value: Any) -> str | None:
    return None if value in ("GET", "HEAD") else 'must be "GET" or "HEAD"'


def _headers(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be an object of header names to string values"
    if len(value) > MAX_HEADERS:
        return f"must have at most {MAX_HEADERS} headers"
    for name, item in value.items():
        if not HEADER_NAME.fullmatch(name):
            return f"{name!r} is not an HTTP header name"
        if not isinstance(item, str):
            return f"{name}: must be a string"
        if len(item) > MAX_HEADER_VALUE or not HEADER_VALUE.fullmatch(item):
            return (
                f"{name}: must be visible ASCII with inner spaces or tabs, at most "
                f"{MAX_HEADER_VALUE} characters"
            )
    return None


FETCH_CHECKS: Final = {
    "url": _text(MAX_URL),
    "method": _method,
    "headers": _headers,
    "max_bytes": _integer(1),
    "timeout_ms": _integer(1),
    "session_id": _id,
    "task_id": _id,
}
SEARCH_CHECKS: Final = {
    "query": _text(MAX_QUERY),
    "max_results": _integer(1),
    "session_id": _id,
    "task_id": _id,
}


"""The checks of a ``POST /v1/tools/http_fetch`` body (``url`` required), and of a
``POST /v1/tools/search`` one (``query`` required); ``/mcp`` checks its tools' arguments
with the same."""


def fetch_request(given: Mapping[str, Any]) -> FetchRequest:
    """The fetch a body that passed :data:`FETCH_CHECKS` asks for."""
    return FetchRequest(
        url=given["url"],
        method=given.get("method", "GET"),
        headers=given.get("headers", {}),
        max_bytes=given.get("max_bytes"),
        timeout_ms=given.get("timeout_ms"),
        session_id=given.get("session_id"),
        task_id=given.get("task_id"),
    )


def search_request(given: Mapping[str, Any]) -> SearchRequest:
    """The search a body that passed :data:`SEARCH_CHECKS` asks for."""
    return SearchRequest(
        query=given["query"],
        max_results=given.get("max_results"),
        session_id=given.get("session_id"),
        task_id=given.get("task_id"),
    )


def _one_of(options: tuple[str, ...]) -> Callable[[str], str | None]:
    return lambda value: None if value in options else f"must be one of {', '.join(options)}"


def _arg_id(value: str) -> str | None:
    return None if ID.fullmatch(value) else _ID_PROBLEM


def _arg_who(value: str) -> str | None:
    return None if 1 <= len(value) <= 256 else "must be 1 to 256 characters"


def _arg_cursor(value: str) -> str | None:
    ok = value.isascii() and value.isdigit() and len(value) <= 18
    return None if ok else "must be the next_cursor of a previous page"


_AUDIT_ARGS: Final[Mapping[str, Callable[[str], str | None]]] = {
    "tool": _one_of(TOOLS),
    "decision": _one_of(DECISIONS),
    "who": _arg_who,
    "session_id": _arg_id,
    "task_id": _arg_id,
    "limit": count_check(MAX_PAGE),
    "cursor": _arg_cursor,
}


def _query_args() -> dict[str, str]:
    """The query string, strict: every unknown, repeated or bad argument named at once."""
    problems = []
    given: dict[str, str] = {}
    for name in request.args:
        values = request.args.getlist(name)
        if name not in _AUDIT_ARGS:
            problems.append(f"{name}: unknown query parameter")
        elif len(values) > 1:
            problems.append(f"{name}: given {len(values)} times")
        elif (problem := _AUDIT_ARGS[name](values[0])) is not None:
            problems.append(f"{name}: {problem}")
        else:
            given[name] = values[0]
    if problems:
        raise Refusal(ErrorCode.INVALID_PARAMS, "; ".join(problems), problems=tuple(problems))
    return given


def tools_blueprint(actors: Actors) -> Blueprint:
    """The tools' routes over ``actors.tools``."""
    routes = Blueprint("tools", __name__)

    def tools() -> Tools:
        if actors.tools is None:
            raise Refusal(ErrorCode.NOT_FOUND, "this orchestra serves no tools")
        actors.tools.require_enabled()
        return actors.tools

    @routes.post("/v1/tools/http_fetch")
    async def http_fetch() -> Response:
        service = tools()
        given = await read_body(FETCH_CHECKS, ("url",))
        result = await service.http_fetch(
            fetch_request(given), who=g.who, correlation_id=g.correlation_id
        )
        return json_response(result.as_json())

    @routes.post("/v1/tools/search")
    async def search() -> Response:
        service = tools()
        given = await read_body(SEARCH_CHECKS, ("query",))
        result = await service.search(
            search_request(given), who=g.who, correlation_id=g.correlation_id
        )
        return json_response(result.as_json())

    @routes.get("/v1/tools/audit")
    async def audit() -> Response:
        service = tools()
        args = _query_args()
        query = AuditQuery(
            tool=args.get("tool"),
            decision=args.get("decision"),
            who=args.get("who"),
            session_id=args.get("session_id"),
            task_id=args.get("task_id"),
            limit=int(args.get("limit", "50")),
            before=int(args["cursor"]) if "cursor" in args else None,
        )
        page = await service.audit(query)
        return json_response(
            {
                "calls": [entry.as_json() for entry in page.entries],
                "next_cursor": page.next_cursor,
            }
        )

    return routes
