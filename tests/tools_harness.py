"""What the tools' tests fetch from: a small HTTP/1.1 server on loopback (raw trio + h11,
so that it can also stall, send any header and speak TLS), a fake SearXNG, stub resolvers,
a certificate made for a test host name, and a log capture.

Each route of :class:`Target` is an :class:`Answer` the test sets (``target.routes[path]``);
unknown paths answer 200 ``text/plain`` ``hello from <path>``. Every request is recorded
(:attr:`Target.seen`), so a test can say what reached the server, with which ``Host`` and,
over TLS, which SNI name.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio

from orchestra.obs import logs

from .harness import Stack, open_stack


@attrs.frozen
class Answer:
    """What the server answers on one path."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "text/plain; charset=utf-8"),)
    body: bytes = b""
    stall: bool = False
    """Send the headers (and ``body``), then nothing more until the client goes away."""
    hang: bool = False
    """Send nothing at all until the client goes away."""
    raw: bytes | None = None
    """Send these bytes (not HTTP at all), then close."""


def redirect(to: str, status: int = 302) -> Answer:
    return Answer(status, (("Location", to), ("Content-Type", "text/plain")), b"moved")


def text(body: str, content_type: str = "text/plain; charset=utf-8", **kw: Any) -> Answer:
    return Answer(headers=(("Content-Type", content_type),), body=body.encode(), **kw)


@attrs.frozen
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: Mapping[str, str]
    """Lower-case names."""


@attrs.define
class Target:
    """An HTTP/1.1 server on ``host`` (127.0.0.1), one request per connection."""

    host: str = "127.0.0.1"
    ssl_context: ssl.SSLContext | None = None
    routes: dict[str, Answer | Callable[[Seen], Answer]] = attrs.field(factory=dict)
    seen: list[Seen] = attrs.field(factory=list)
    connections: int = 0
    port: int = 0
    snis: list[str | None] = attrs.field(factory=list)
    """The server name each TLS handshake asked for, in order."""

    @property
    def base(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base + path

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        if self.ssl_context is not None:
            self.ssl_context.sni_callback = self._note_sni
            listeners = [
                trio.SSLListener(listener, self.ssl_context, https_compatible=True)
                for listener in listeners
            ]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.port)

    def _note_sni(self, _sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        self.snis.append(name)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        async with stream:
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=4 * 1024 * 1024)
            request: h11.Request | None = None
            try:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        conn.receive_data(data)
                        if not data and request is None:
                            return
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
            except (h11.RemoteProtocolError, trio.BrokenResourceError):
                return
            assert request is not None
            seen = Seen(
                request.method.decode(),
                request.target.decode(),
                {k.decode().lower(): v.decode() for k, v in request.headers},
            )
            self.seen.append(seen)
            route = self.routes.get(urlsplit(seen.path).path)
            if route is None:
                answer = text(f"hello from {seen.path}")
            else:
                answer = route(seen) if callable(route) else route
            if answer.hang:
                await trio.sleep_forever()
            if answer.raw is not None:
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(answer.raw)
                return
            headers = [*answer.headers, ("Connection", "close")]
            if not answer.stall:
                headers.append(("Content-Length", str(len(answer.body))))
            try:
                await stream.send_all(
                    conn.send(h11.Response(status_code=answer.status, headers=headers))
                )
                if seen.method != "HEAD" and answer.body:
                    await stream.send_all(conn.send(h11.Data(data=answer.body)))
                if answer.stall:
                    await trio.sleep_forever()
                await stream.send_all(conn.send(h11.EndOfMessage()))
            except trio.BrokenResourceError:
                return


def echo(seen: Seen) -> Answer:
    """An answer that shows the request: its method, path and headers, as JSON."""
    body = {"method": seen.method, "path": seen.path, "headers": dict(seen.headers)}
    return Answer(headers=(("Content-Type", "application/json"),), body=json.dumps(body).encode())


def searxng(seen: Seen) -> Answer:
    """A fake SearXNG ``/search``: three results about the query (``format=json`` only)."""
    args = parse_qs(urlsplit(seen.path).query)
    if args.get("format") != ["json"]:
        return Answer(403, body=b"format not allowed")
    query = args["q"][0]
    results = [
        {
            "title": f"Result {i} for {query}",
            "url": f"https://example.org/{i}",
            "content": f"snippet {i} about {query}",
            "engine": "duckduckgo" if i % 2 else "wikipedia",
        }
        for i in range(3)
    ]
    results.append({"title": "no url"})  # skipped
    document = {"query": query, "number_of_results": 3, "results": results}
    return Answer(
        headers=(("Content-Type", "application/json"),), body=json.dumps(document).encode()
    )


@attrs.define
class StubResolver:
    """Answers from a table: ``answers[host]`` is a list of answers, one per call (the last
    one repeats); a host not in the table does not resolve."""

    answers: dict[str, list[list[str]]] = attrs.field(factory=dict)
    calls: list[str] = attrs.field(factory=list)

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        await trio.lowlevel.checkpoint()
        self.calls.append(host)
        if host not in self.answers:
            raise OSError(f"unknown host {host}")
        answers = self.answers[host]
        count = self.calls.count(host)
        return answers[min(count, len(answers)) - 1]


@attrs.frozen
class Certificate:
    """A self-signed certificate for ``names``, its key, and a client context trusting it."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def make_certificate(directory: Path, name: str) -> Certificate:
    """A certificate for ``name`` (openssl, an EC key: fast)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    options = (
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
        f"-subj /CN={name} -addext subjectAltName=DNS:{name}"
    )
    command = ["openssl", *options.split(), "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)
    return Certificate(cert, key)


@contextmanager
def captured_logs(level: int = logging.DEBUG) -> Iterator[io.StringIO]:
    """Every log line of the process, as orchestra writes them (JSON, secrets scrubbed),
    into the StringIO yielded."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def read_all(directory: Path) -> bytes:
    """The bytes of every file under ``directory`` (the audit database and its log)."""
    return b"".join(path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file())


def policy(port: int, **rules: Any) -> dict[str, Any]:
    """A ``[tools.policy]`` that lets the tests reach 127.0.0.1 on ``port`` and nothing
    else, with ``rules`` on top."""
    return {"allowed_networks": ["127.0.0.1/32"], "ports": [port], **rules}


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` on top, tables merged key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@attrs.frozen
class ToolsStack:
    """orchestra in front of the fake engine, and the one server its tools may reach."""

    stack: Stack
    target: Target

    @property
    def running(self) -> Any:
        return self.stack.running


@asynccontextmanager
async def open_tools_stack(
    tools: Mapping[str, Any] | None = None, **sections: Any
) -> AsyncIterator[ToolsStack]:
    """orchestra whose tools reach a :class:`Target` on loopback (also its SearXNG, at
    ``/search``) and nothing else: only ``127.0.0.1`` by name, only its port, so nothing
    sent to the tools resolves a name or leaves the machine. ``tools`` goes on top of that
    ``[tools]`` table."""
    target = Target()
    target.routes["/search"] = searxng
    async with trio.open_nursery() as nursery:
        await nursery.start(target.serve)
        table = {
            "policy": {
                **policy(target.port),
                "allowed_domains": ["127.0.0.1"],
                "max_time_ms": 5000,
            },
            "search": {"searxng_url": target.base, "timeout_ms": 5000},
        }
        async with open_stack(tools=merged(table, tools or {}), **sections) as stack:
            yield ToolsStack(stack, target)
        nursery.cancel_scope.cancel()
