"""The agents' tools over the Model Context Protocol: ``POST /mcp`` (``specs/tools.md``).

A stateless server of MCP's Streamable HTTP transport, answering ``application/json``:
``initialize`` (protocol versions :data:`VERSIONS`; an unknown one is answered with the
newest), ``ping``, ``tools/list`` (``http_fetch``, and ``search`` when SearXNG is
configured) and ``tools/call``, which runs the same :class:`~orchestra.tools.Tools` as
``POST /v1/tools/...``: the same policy, redaction, hook and audit, under the caller's
identity. A notification (no ``id``) is answered 202 without a body. ``GET`` and
``DELETE /mcp`` are 405 (no route): there is no server-to-client stream and no session.

Why not the ``mcp`` package's server: it runs on Trio (anyio), but it requires and
imports uvicorn and sse-starlette, asyncio-only libraries, into the service, and twenty
packages with them; the stateless JSON subset two tools need is this module. The official
client (``mcp``, a test dependency) drives it in ``tests/test_mcp.py``.

Errors: a body that is not JSON, or not one JSON-RPC request object, is orchestra's 400
envelope; an unknown method, a bad ``params`` or an unknown tool is a JSON-RPC error (200);
a tool the policy refused or whose upstream failed is a tool result with ``isError: true``
and the refusal's code, message and rule (MCP's way: the model sees why). A request whose
``Origin`` is not this server's is 403 (MCP's guard against DNS rebinding by a browser).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from quart import Blueprint, Response, g, request

from orchestra import __version__
from orchestra.errors import ErrorCode, Refusal
from orchestra.http.bodies import json_response, read_json_object
from orchestra.http.context import Actors
from orchestra.http.tools import FETCH_CHECKS, SEARCH_CHECKS, fetch_request, search_request

VERSIONS: Final = ("2025-11-25", "2025-06-18", "2025-03-26")
"""The protocol versions spoken, newest first."""

METHOD_NOT_FOUND, INVALID_PARAMS = -32601, -32602
"""JSON-RPC's error codes this server answers with."""

_FETCH_SCHEMA: Final = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "description": "http(s) URL, checked against the policy"},
        "method": {"enum": ["GET", "HEAD"], "default": "GET"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "max_bytes": {"type": "integer", "minimum": 1, "description": "at most the policy's"},
        "timeout_ms": {"type": "integer", "minimum": 1, "description": "at most the policy's"},
        "session_id": {"type": ["string", "null"]},
        "task_id": {"type": ["string", "null"]},
    },
}
_SEARCH_SCHEMA: Final = {
    "type": "object",
    "additionalProperties": False,
    "required": ["query"],
    "properties": {
        "query": {"type": "string", "minLength": 1},
        "max_results": {"type": "integer", "minimum": 1},
        "session_id": {"type": ["string", "null"]},
        "task_id": {"type": ["string", "null"]},
    },
}
TOOLS: Final[Mapping[str, Mapping[str, Any]]] = {
    "http_fetch": {
        "name": "http_fetch",
        "title": "Fetch a URL",
        "description": (
            "Fetch an http(s) URL (GET or HEAD) behind the server's policy: allowed domains, "
            "schemes, ports, content types, no private addresses, size and time limits. "
            "Answers the status, headers, body as text (truncated at the limit, saying so), "
            "the final URL after redirects, bytes and time."
        ),
        "inputSchema": _FETCH_SCHEMA,
    },
    "search": {
        "name": "search",
        "title": "Search the web",
        "description": "Search the web through the server's SearXNG: titles, URLs, snippets.",
        "inputSchema": _SEARCH_SCHEMA,
    },
}


class _RpcError(Exception):
    """A JSON-RPC error answer (never leaves this module)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _same_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == request.host


def _request_object(raw: bytes) -> Mapping[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refusal(ErrorCode.INVALID_PARAMS, f"the body is not valid JSON: {exc}") from None
    ok = isinstance(data, dict) and data.get("jsonrpc") == "2.0"
    if not ok or not isinstance(data.get("method"), str):
        raise Refusal(
            ErrorCode.INVALID_PARAMS,
            'the body must be one JSON-RPC 2.0 request: {"jsonrpc": "2.0", "method", ...}',
        )
    if unknown := sorted(set(data) - {"jsonrpc", "id", "method", "params"}):
        raise Refusal(ErrorCode.INVALID_PARAMS, f"{unknown[0]}: not a member of a request")
    if not isinstance(data.get("params", {}), dict):
        raise Refusal(ErrorCode.INVALID_PARAMS, "params: must be an object")
    given_id = data.get("id", 0)
    if isinstance(given_id, bool) or not isinstance(given_id, str | int):
        raise Refusal(ErrorCode.INVALID_PARAMS, "id: must be a string or an integer")
    message: Mapping[str, Any] = data
    return message


def mcp_blueprint(actors: Actors) -> Blueprint:
    """``/mcp`` over ``actors.tools``."""
    routes = Blueprint("mcp", __name__)

    def listed() -> list[Mapping[str, Any]]:
        tools = actors.tools
        if tools is None or not tools.enabled:
            return []
        names = ["http_fetch", *(["search"] if tools.config.search.searxng_url else [])]
        return [TOOLS[name] for name in names]

    async def call_tool(params: Mapping[str, Any]) -> dict[str, Any]:
        name, arguments = params.get("name"), params.get("arguments", {})
        if name not in {tool["name"] for tool in listed()}:
            raise _RpcError(INVALID_PARAMS, f"unknown tool: {name!r}")
        if not isinstance(arguments, dict):
            raise _RpcError(INVALID_PARAMS, "arguments: must be an object")
        tools = actors.tools
        assert tools is not None
        raw = json.dumps(arguments).encode()
        try:
            if name == "http_fetch":
                given = read_json_object(raw, FETCH_CHECKS, ("url",))
                done = await tools.http_fetch(
                    fetch_request(given), who=g.who, correlation_id=g.correlation_id
                )
                answer = done.as_json()
            else:
                given = read_json_object(raw, SEARCH_CHECKS, ("query",))
                found = await tools.search(
                    search_request(given), who=g.who, correlation_id=g.correlation_id
                )
                answer = found.as_json()
        except Refusal as refusal:
            error = {"code": str(refusal.code), "message": refusal.message}
            if refusal.policy_label is not None:
                error["policy_label"] = refusal.policy_label
            text = f"{refusal.code}: {refusal.message}"
            return {
                "content": [{"type": "text", "text": text}],
                "structuredContent": {"error": error},
                "isError": True,
            }
        text = json.dumps(answer, ensure_ascii=False)
        return {
            "content": [{"type": "text", "text": text}],
            "structuredContent": answer,
            "isError": False,
        }

    async def initialize(params: Mapping[str, Any]) -> dict[str, Any]:
        asked = params.get("protocolVersion")
        return {
            "protocolVersion": asked if asked in VERSIONS else VERSIONS[0],
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "orchestra", "version": __version__},
            "instructions": "Tools behind this orchestra's policy; every call is audited.",
        }

    async def list_tools(params: Mapping[str, Any]) -> dict[str, Any]:
        return {"tools": listed()}

    async def ping(params: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    methods: Mapping[str, Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]] = {
        "initialize": initialize,
        "ping": ping,
        "tools/list": list_tools,
        "tools/call": call_tool,
    }

    @routes.post("/mcp")
    async def mcp() -> Response:
        origin = request.headers.get("Origin")
        if origin is not None and not _same_origin(origin):
            raise Refusal(ErrorCode.FORBIDDEN, f"Origin {origin!r} is not this server's")
        version = request.headers.get("MCP-Protocol-Version")
        if version is not None and version not in VERSIONS:
            raise Refusal(
                ErrorCode.INVALID_PARAMS,
                f"MCP-Protocol-Version {version!r} is not one of {', '.join(VERSIONS)}",
            )
        raw = await request.get_data(cache=False)
        assert isinstance(raw, bytes)
        message = _request_object(raw)
        if "id" not in message:  # a notification: nothing to answer
            return Response(b"", status=202)
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        params = message.get("params", {})
        try:
            method = methods.get(message["method"])
            if method is None:
                raise _RpcError(METHOD_NOT_FOUND, f"method not found: {message['method']}")
            reply["result"] = await method(params)
        except _RpcError as exc:
            reply["error"] = {"code": exc.code, "message": exc.message}
        return json_response(reply)

    return routes


__all__ = ["VERSIONS", "mcp_blueprint"]
