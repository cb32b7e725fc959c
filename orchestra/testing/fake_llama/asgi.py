"""Raw ASGI 3 plumbing for the fake engine: message types, JSON and error bodies, the api-key
check, reading a request body, sending a whole response, the lifespan protocol, and
:class:`Response`, the sending side of one completion that notices a client going away.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import attrs
import trio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = (b"content-type", b"application/json; charset=utf-8")
"""The header of every JSON response."""

_ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


class Abort(Exception):
    """Raised out of the ASGI app after the response started, so hypercorn cuts the socket."""


def dumps(value: Any) -> bytes:
    """Compact JSON, as the engine writes it."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def error_body(code: int, message: str, kind: str | None = None, **extra: Any) -> bytes:
    """The engine's error envelope ``{"error": {"code", "message", "type", ...}}``."""
    error = {
        "code": code,
        "message": message,
        "type": kind or _ERROR_TYPE.get(code, "server_error"),
    }
    return dumps({"error": {**error, **extra}})


def authorized(scope: Scope, api_key: str) -> bool:
    """Whether a request passes ``--api-key`` (keys separated by commas; empty: no check):
    ``Authorization: Bearer KEY``, or ``X-Api-Key: KEY`` when there is no ``Authorization``,
    as llama-server's ``middleware_validate_api_key`` (server-http.cpp)."""
    if not api_key:
        return True
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    given = headers.get("authorization") or headers.get("x-api-key", "")
    return given.removeprefix("Bearer ") in [key for key in api_key.split(",") if key]


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer the ASGI lifespan protocol until shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_json(receive: Receive) -> Any:
    """The request body parsed as JSON, or None when it is not JSON."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return None


async def respond(send: Send, status: int, body: bytes, content_type: bytes = JSON[1]) -> None:
    """Send a whole response with its ``content-length``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


@attrs.define
class Response:
    """The sending side of one completion; notes a client that went away."""

    send: Send
    generation: trio.CancelScope
    """Cancelled when the client goes away, to stop generating at once."""
    gone: bool = False
    """The client disconnected (or a send to it failed) before the response ended."""
    ending: bool = False
    """The last message is being (or has been) sent."""
    aborted: bool = False
    """The connection is to be cut once the app returns (``[[drop]]``)."""

    def client_left(self) -> None:
        """The client went away: stop generating, unless the response was already sent."""
        if not self.ending:
            self.gone = True
            self.generation.cancel()

    async def start(self, status: int, *headers: tuple[bytes, bytes]) -> None:
        """Send the status line and headers."""
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def whole(self, status: int, body: bytes) -> None:
        """Send a complete JSON response."""
        await self.start(status, JSON, (b"content-length", str(len(body)).encode()))
        await self.body(body, last=True)

    async def body(self, data: bytes, *, last: bool = False) -> None:
        """Send one piece of the body in its own ASGI message, so it is written at once."""
        if last:
            # hypercorn reports ``http.disconnect`` to the app while it completes a
            # response: from here on that is no longer a client leaving early.
            self.ending = True
        await self._send({"type": "http.response.body", "body": data, "more_body": not last})

    async def _send(self, message: Message) -> None:
        try:
            await self.send(message)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.ending = False
            self.client_left()
            await trio.lowlevel.checkpoint()  # raises Cancelled inside ``generation``
