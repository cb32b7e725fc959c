"""An httpx transport that hands requests to an ASGI app in the same Trio run, streaming.

httpx's own ``ASGITransport`` collects the whole response body before it returns, which an
endless server-sent-event stream never lets it do. This one returns as soon as the app has
started its response and passes body chunks on as the app sends them, through a channel
of size 0: an app that produces faster than the client reads waits, as it would on a
socket. Closing the response (or cancelling the read) tells the app ``http.disconnect``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import attrs
import httpx
import trio

Message = MutableMapping[str, Any]


AsgiApp = Callable[[Any, Any, Any], Awaitable[None]]
"""An ASGI 3 application: ``await app(scope, receive, send)``."""


@attrs.define(eq=False)
class _Exchange:
    """One request in flight: what the app said so far, and how to tell it the client left."""

    body: bytes
    started: trio.Event = attrs.field(factory=trio.Event)
    gone: trio.Event = attrs.field(factory=trio.Event)
    status: int = 500
    headers: list[tuple[bytes, bytes]] = attrs.field(factory=list)
    failure: BaseException | None = None
    _request_read: bool = False

    async def receive(self) -> Message:
        if not self._request_read:
            self._request_read = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}


@attrs.define(eq=False)
class _Body(httpx.AsyncByteStream):
    """The response body: chunks as the app sends them; closing it disconnects the app."""

    chunks: trio.MemoryReceiveChannel[bytes]
    exchange: _Exchange

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self  # not an async generator: a reader may stop at any chunk

    async def __anext__(self) -> bytes:
        try:
            return await self.chunks.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            pass
        if self.exchange.failure is not None:
            raise httpx.ReadError(f"the app failed mid-response: {self.exchange.failure!r}")
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.exchange.gone.set()
        self.chunks.close()
        await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class InProcessTransport(httpx.AsyncBaseTransport):
    """Serve httpx requests with ``app``, each in a task of ``nursery`` (which must outlive
    every response read through this transport)."""

    app: AsgiApp
    nursery: trio.Nursery

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        exchange = _Exchange(await request.aread())
        send_chunk, chunks = trio.open_memory_channel[bytes](0)
        scope: Message = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port or 80),
            "client": ("127.0.0.1", 0),
            "root_path": "",
        }

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                exchange.headers = list(message.get("headers", []))
                exchange.started.set()
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if body and not exchange.gone.is_set():
                    try:
                        await send_chunk.send(body)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        exchange.gone.set()  # the client closed the response
                if not message.get("more_body", False):
                    send_chunk.close()

        async def serve() -> None:
            with send_chunk:
                try:
                    await self.app(scope, exchange.receive, send)
                except Exception as exc:
                    exchange.failure = exc
                finally:
                    exchange.started.set()

        self.nursery.start_soon(serve)
        try:
            await exchange.started.wait()
        except BaseException:
            exchange.gone.set()  # cancelled before the answer began: let the app go
            chunks.close()
            raise
        if exchange.failure is not None and not exchange.headers:
            chunks.close()
            raise httpx.ConnectError(f"the in-process app failed: {exchange.failure!r}")
        return httpx.Response(
            exchange.status, headers=exchange.headers, stream=_Body(chunks, exchange)
        )
