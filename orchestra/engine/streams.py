"""How an engine's streamed answer is read: one POST, its ``data:`` lines handed on as
they arrive, every transport failure an :class:`~orchestra.errors.EngineError`.

Two readers with one contract (:class:`Streams`):

- :class:`SocketStreams` for ``http://`` engines (every owned llama-server, most attached
  ones): a plain non-blocking socket, the request written in one send, the response's
  chunked framing and SSE lines cut by hand, and one cancel scope whose deadline moves on
  with each read. A token costs one readiness wait, one ``recv`` and the parsing of its
  own bytes: no per-read cancel scope, no async generator per layer. This is the hot path
  of every task (``specs/performance.md``).
- :class:`HttpxStreams` for everything else (``https://``, or a client the tests script
  with ``httpx.MockTransport``): the same stream through ``httpx``.

Both close the connection when the caller is cancelled: that is how llama-server (and any
OpenAI-compatible server) learns to stop generating and frees the slot.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any, NoReturn, Protocol, cast
from urllib.parse import urlsplit

import attrs
import httpx
import trio

from orchestra import __version__
from orchestra.engine.http1 import BadFraming, Body, DataLines, response_head
from orchestra.errors import EngineError, ErrorCode

LineReader = Callable[[bytes], None]
"""Called with each ``data:`` payload in order; raises EngineError to end the stream."""

ErrorOf = Callable[[int, bytes], EngineError]
"""The EngineError for an answer with a status other than 200 and this body."""

CONNECTION_CLOSE = {"Connection": "close"}
"""llama-server closes the connection after every streamed response although its headers
say keep-alive; a pooled connection reused at once races that close and fails before any
byte. So a stream's connection is never used again: a fresh one (a loopback connect: well
under 1 ms) per stream."""

_RECV_BYTES = 65536
_MAX_HEAD_BYTES = 65536
_MAX_ERROR_BODY_BYTES = 1 << 20


class Streams(Protocol):
    """POSTs a JSON body and reads the SSE answer (``Engine`` adapters hold one)."""

    async def post_sse(
        self, path: str, body: Mapping[str, Any], read: LineReader, error: ErrorOf
    ) -> None:
        """POST ``body`` to ``path`` and hand each ``data:`` payload of the answer to
        ``read`` until the engine ends the stream. A status other than 200 raises
        ``error(status, body)``; an EngineError of ``read`` ends the stream and is raised;
        a lost connection is WORKER_RESET, silence for the read timeout DECODE_TIMEOUT, no
        connection at all WORKER_RESET marked unreachable."""
        ...


def raise_transport(exc: httpx.HTTPError, what: str) -> NoReturn:
    """An httpx failure during ``what`` as the EngineError it means."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        raise _unreachable(what, str(exc)) from exc
    if isinstance(exc, httpx.TimeoutException):
        raise _silent(what) from exc
    raise _lost(what, repr(exc)) from exc


def _unreachable(what: str, detail: str) -> EngineError:
    return EngineError(
        ErrorCode.WORKER_RESET, f"engine unreachable during {what}: {detail}", True, True
    )


def _silent(what: str) -> EngineError:
    return EngineError(ErrorCode.DECODE_TIMEOUT, f"engine went silent during {what}", True)


def _lost(what: str, detail: str) -> EngineError:
    return EngineError(
        ErrorCode.WORKER_RESET, f"engine connection lost during {what}: {detail}", True
    )


@attrs.frozen
class HttpxStreams:
    """:class:`Streams` through an ``httpx.AsyncClient`` (whose lifetime its owner keeps);
    ``timeout``: the client's own when None."""

    client: httpx.AsyncClient
    timeout: httpx.Timeout | None = None

    async def post_sse(
        self, path: str, body: Mapping[str, Any], read: LineReader, error: ErrorOf
    ) -> None:
        """See :meth:`Streams.post_sse`."""
        timeouts: dict[str, Any] = {} if self.timeout is None else {"timeout": self.timeout}
        lines = DataLines()
        try:
            async with self.client.stream(
                "POST", path, json=body, headers=CONNECTION_CLOSE, **timeouts
            ) as response:
                if response.status_code != 200:
                    raise error(response.status_code, await response.aread())
                # Closed explicitly when ``read`` fails mid-stream: a half-read httpx
                # generator left to the garbage collector would be finalized out of place.
                raw = cast(AsyncGenerator[bytes, None], response.aiter_raw())
                async with aclosing(raw) as chunks:
                    async for chunk in chunks:
                        for line in lines.feed(chunk):
                            read(line)
                for line in lines.end():
                    read(line)
        except httpx.HTTPError as exc:
            raise_transport(exc, path)


@attrs.define
class _Connection:
    """One non-blocking socket to the engine, read under a deadline that ``recv`` moves on.

    The deadline moves at most once per ``slack`` seconds, to ``slack`` beyond the read
    timeout: the stream fails after between ``timeout_s`` and ``timeout_s + slack`` of
    silence, never sooner, and a token costs no deadline bookkeeping.
    """

    sock: socket.socket
    scope: trio.CancelScope
    timeout_s: float
    slack: float = attrs.field(init=False)
    moved_at: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.slack = min(self.timeout_s / 16, 1.0)
        self.moved_at = -self.slack
        self.move_deadline()

    def move_deadline(self) -> None:
        now = trio.current_time()
        if now - self.moved_at >= self.slack:
            self.scope.deadline = now + self.timeout_s + self.slack
            self.moved_at = now

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)
        await trio.lowlevel.checkpoint()

    async def recv(self) -> bytes:
        """The next bytes the engine sent (b"" at its close). Yields to the scheduler
        once either way, so a fast engine cannot starve the other tasks."""
        try:
            data = self.sock.recv(_RECV_BYTES)
        except BlockingIOError:
            while True:
                await trio.lowlevel.wait_readable(self.sock)
                try:
                    data = self.sock.recv(_RECV_BYTES)
                    break
                except BlockingIOError:
                    continue
        else:
            await trio.lowlevel.checkpoint()
        self.move_deadline()
        return data

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


@attrs.frozen
class SocketStreams:
    """:class:`Streams` for an ``http://`` engine, on a socket of its own per stream.

    ``base_url`` may carry a path (an OpenAI-compatible server under a prefix); ``api_key``
    goes as ``Authorization: Bearer``; ``connect_timeout_s`` bounds the connect,
    ``read_timeout_s`` any silence after it (the engine's prompt processing included).
    """

    host: str
    port: int
    prefix: str
    headers: bytes
    connect_timeout_s: float
    read_timeout_s: float

    @classmethod
    def for_url(
        cls, base_url: str, *, api_key: str, connect_timeout_s: float, read_timeout_s: float
    ) -> SocketStreams:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http:// URL: {base_url!r}")
        port = parts.port or 80
        host = parts.hostname
        authority = f"[{host}]" if ":" in host else host
        headers = (
            f"Host: {authority}:{port}\r\nUser-Agent: orchestra/{__version__}\r\n"
            "Accept: text/event-stream\r\nAccept-Encoding: identity\r\n"
            + (f"Authorization: Bearer {api_key}\r\n" if api_key else "")
            + "Content-Type: application/json\r\nConnection: close\r\n"
        )
        return cls(
            host, port, parts.path.rstrip("/"), headers.encode(), connect_timeout_s, read_timeout_s
        )

    async def post_sse(
        self, path: str, body: Mapping[str, Any], read: LineReader, error: ErrorOf
    ) -> None:
        """See :meth:`Streams.post_sse`."""
        payload = json.dumps(body).encode()
        request = b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
            (self.prefix + path).encode(), self.headers, len(payload), payload
        )  # fmt: skip
        sock = await self._connect(path)
        with trio.CancelScope() as scope:
            conn = _Connection(sock, scope, self.read_timeout_s)
            try:
                await conn.send_all(request)
                await self._read_answer(conn, path, read, error)
            except OSError as exc:
                raise _lost(path, repr(exc)) from None
            except BadFraming as exc:
                raise _lost(path, str(exc)) from None
            finally:
                conn.close()
        if scope.cancelled_caught:
            raise _silent(path)

    async def _read_answer(
        self, conn: _Connection, path: str, read: LineReader, error: ErrorOf
    ) -> None:
        buf = b""
        while (end := buf.find(b"\r\n\r\n")) < 0:
            data = await conn.recv()
            if not data:
                raise _lost(path, "closed before the response head")
            buf += data
            if len(buf) > _MAX_HEAD_BYTES:
                raise BadFraming("response head too long")
        status, headers = response_head(buf[:end])
        body, rest = Body.of(headers), buf[end + 4 :]
        if status != 200:
            raise error(status, await self._whole(conn, body, rest))
        lines = DataLines()
        data = rest
        while True:
            for line in lines.feed(body.feed(data)):
                read(line)
            if body.done:
                break
            data = await conn.recv()
            if not data:
                if not body.ends_at_close:
                    raise _lost(path, "closed in the middle of the response")
                break
        for line in lines.end():
            read(line)

    async def _whole(self, conn: _Connection, body: Body, data: bytes) -> bytes:
        """The rest of an error answer's body (at most 1 MiB of it)."""
        parts = [body.feed(data)]
        size = len(parts[0])
        while not body.done and size < _MAX_ERROR_BODY_BYTES and (data := await conn.recv()):
            parts.append(body.feed(data))
            size += len(parts[-1])
        return b"".join(parts)

    async def _connect(self, path: str) -> socket.socket:
        """A connected non-blocking socket to the engine; EngineError (unreachable) if none
        within ``connect_timeout_s``."""
        failures: list[str] = []
        with trio.move_on_after(self.connect_timeout_s):
            for family, address in await self._addresses(path):
                sock = socket.socket(family, socket.SOCK_STREAM)
                connected = False
                try:
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    await _connect_one(sock, address)
                    connected = True
                except OSError as exc:
                    failures.append(str(exc))
                finally:
                    if not connected:  # refused, or cancelled (the timeout included)
                        sock.close()
                if connected:
                    return sock
            raise _unreachable(path, "; ".join(failures) or "no address")
        raise _unreachable(path, f"no connection within {self.connect_timeout_s} s")

    async def _addresses(self, path: str) -> list[tuple[int, Any]]:
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            pass
        else:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            return [(family, (self.host, self.port))]
        try:
            found = await trio.socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise _unreachable(path, str(exc)) from None
        return [(family, address) for family, _, _, _, address in found]


async def _connect_one(sock: socket.socket, address: Any) -> None:
    try:
        sock.connect(address)
    except BlockingIOError:
        await trio.lowlevel.wait_writable(sock)
        if code := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            raise OSError(code, f"connect to {address}: {os.strerror(code)}") from None
    await trio.lowlevel.checkpoint()


def stream_timeout(connect_timeout_s: float, read_timeout_s: float) -> httpx.Timeout:
    """httpx's timeouts for a stream: connect (and write) within ``connect_timeout_s``,
    silent at most ``read_timeout_s``."""
    return httpx.Timeout(
        connect=connect_timeout_s, read=read_timeout_s, write=connect_timeout_s, pool=read_timeout_s
    )


def streams_for(
    client: httpx.AsyncClient, *, api_key: str, connect_timeout_s: float, read_timeout_s: float
) -> Streams:
    """The streams of the engine at ``client``'s base URL: on sockets of their own when it
    is ``http://``, through ``client`` otherwise."""
    base_url = str(client.base_url)
    if base_url.startswith("http://"):
        return SocketStreams.for_url(
            base_url,
            api_key=api_key,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
        )
    return HttpxStreams(client, stream_timeout(connect_timeout_s, read_timeout_s))
