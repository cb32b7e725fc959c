"""The socket reader of engine streams (``SocketStreams``) against a scripted TCP server:
the request it writes, every framing of the answer cut at any byte, and each way a stream
can fail, each ending as the EngineError the task ends with; cancelling closes the
connection (which is what frees a llama.cpp slot)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.config import AdapterConfig
from orchestra.engine.llamacpp import LlamaCppAdapter
from orchestra.engine.streams import SocketStreams, streams_for
from orchestra.errors import EngineError, ErrorCode

Script = Callable[[trio.SocketStream], Awaitable[None]]
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


@attrs.define
class Server:
    """A one-route HTTP server that records each request and answers it with ``script``."""

    script: Script
    port: int = 0
    requests: list[bytes] = attrs.field(factory=list)
    closed_by_client: trio.Event = attrs.field(factory=trio.Event)

    async def handle(self, stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(65536)
        head, _, body = request.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += await stream.receive_some(65536)
        self.requests.append(head + b"\r\n\r\n" + body)
        try:
            await self.script(stream)
            while await stream.receive_some(65536):
                pass
            self.closed_by_client.set()
        except trio.BrokenResourceError:
            self.closed_by_client.set()
        except trio.ClosedResourceError:
            pass  # the script closed the connection itself
        finally:
            await stream.aclose()


@asynccontextmanager
async def serving(script: Script) -> AsyncIterator[Server]:
    server = Server(script)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, server.handle, 0)
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


def streams(port: int, *, api_key: str = "", prefix: str = "", timeout: float = 5) -> SocketStreams:
    return SocketStreams.for_url(
        f"http://127.0.0.1:{port}{prefix}",
        api_key=api_key,
        connect_timeout_s=5,
        read_timeout_s=timeout,
    )


def never(status: int, body: bytes) -> EngineError:
    raise AssertionError(f"unexpected HTTP {status}: {body!r}")


def refused(status: int, body: bytes) -> EngineError:
    return EngineError(ErrorCode.INVALID_PARAMS, f"{status}:{body.decode()}", False)


def sse_chunks(payloads: list[bytes]) -> bytes:
    events = b"".join(b"data: " + p + b"\n\n" for p in payloads)
    return SSE_HEAD + b"%x\r\n%s\r\n0\r\n\r\n" % (len(events), events)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


ONE_FRAME = SSE_HEAD + chunk(b'data: {"content":1}\n\n')


def sending(*pieces: bytes, then_close: bool = False) -> Script:
    """Send ``pieces`` one at a time (each once the reader has read the one before), then
    wait for the reader to close, or close first."""

    async def script(stream: trio.SocketStream) -> None:
        for piece in pieces:
            await stream.send_all(piece)
            await trio.testing.wait_all_tasks_blocked()
        if then_close:
            await stream.aclose()

    return script


async def collect(s: SocketStreams, error: Any = never) -> list[bytes]:
    lines: list[bytes] = []
    await s.post_sse("/completion", {"prompt": "hi"}, lines.append, error)
    return lines


PAYLOADS = [b'{"content":"a"}', b'{"content":" b"}', b'{"stop":true}']


async def test_the_request_as_written() -> None:
    async with serving(sending(sse_chunks(PAYLOADS))) as server:
        s = streams(server.port, api_key="k3y", prefix="/prefix")
        await s.post_sse("/v1/completions", {"prompt": "héllo"}, lambda line: None, never)
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /prefix/v1/completions HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Authorization: Bearer k3y" in lines
    assert b"Connection: close" in lines
    assert b"Content-Type: application/json" in lines
    assert json.loads(body) == {"prompt": "héllo"}
    assert b"X-Conversation-Id" not in head


async def test_no_authorization_without_a_key() -> None:
    async with serving(sending(sse_chunks(PAYLOADS))) as server:
        await collect(streams(server.port))
    assert b"authorization" not in server.requests[0].lower()


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_frames_cut_at_any_byte(cuts: list[int]) -> None:
    wire = sse_chunks(PAYLOADS)
    points = sorted({c % len(wire) for c in cuts})
    pieces = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]

    async def main() -> list[bytes]:
        async with serving(sending(*[p for p in pieces if p])) as server:
            return await collect(streams(server.port))

    assert trio.run(main) == PAYLOADS


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
    ],
    ids=["content-length", "until close"],
)
async def test_unchunked_answers(answer: bytes) -> None:
    events = b"".join(b"data: " + p + b"\n\n" for p in PAYLOADS)
    head = answer % len(events) if b"%d" in answer else answer
    async with serving(sending(head + events, then_close=True)) as server:
        assert await collect(streams(server.port)) == PAYLOADS


async def test_an_error_status_hands_its_whole_body_to_error() -> None:
    body = b'{"error":{"code":503,"message":"Loading model"}}'
    answer = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    async with serving(sending(answer[:70], answer[70:])) as server:
        with pytest.raises(EngineError) as caught:
            await collect(streams(server.port), refused)
    assert caught.value.message == "503:" + body.decode()


@pytest.mark.parametrize(
    "wire",
    [ONE_FRAME, SSE_HEAD + b'20\r\ndata: {"content"', b"HTTP/1.1 200 OK\r\nContent-Le"],
    ids=["between chunks", "mid-chunk", "mid-head"],
)
async def test_a_connection_closed_early_is_a_worker_reset(wire: bytes) -> None:
    async with serving(sending(wire, then_close=True)) as server:
        with pytest.raises(EngineError) as caught:
            await collect(streams(server.port))
    assert caught.value.code is ErrorCode.WORKER_RESET
    assert caught.value.retriable and not caught.value.unreachable
    assert "connection lost" in caught.value.message


async def test_bad_framing_is_a_worker_reset() -> None:
    async with serving(sending(SSE_HEAD + b"xyz\r\n")) as server:
        with pytest.raises(EngineError) as caught:
            await collect(streams(server.port))
    assert caught.value.code is ErrorCode.WORKER_RESET
    assert "chunk size" in caught.value.message


async def test_silence_is_a_decode_timeout_and_closes_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await stream.send_all(ONE_FRAME)

    async with serving(silent) as server:
        start = trio.current_time()
        lines: list[bytes] = []
        with pytest.raises(EngineError) as caught:
            await streams(server.port, timeout=30).post_sse("/completion", {}, lines.append, never)
        waited = trio.current_time() - start
        await server.closed_by_client.wait()
    assert caught.value.code is ErrorCode.DECODE_TIMEOUT
    assert lines == [b'{"content":1}']
    assert 30 <= waited <= 31 + 1e-6  # the read timeout, and at most its slack (1 s) more


async def test_nobody_listening_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(EngineError) as caught:
        await collect(streams(port))
    assert caught.value.code is ErrorCode.WORKER_RESET
    assert caught.value.unreachable and caught.value.retriable


async def test_a_host_name_is_resolved() -> None:
    async with serving(sending(sse_chunks(PAYLOADS))) as server:
        s = SocketStreams.for_url(
            f"http://localhost:{server.port}", api_key="", connect_timeout_s=5, read_timeout_s=5
        )
        assert await collect(s) == PAYLOADS


async def test_cancelling_mid_stream_is_seen_by_the_engine() -> None:
    reading = trio.Event()

    async with serving(sending(ONE_FRAME)) as server:
        with trio.CancelScope() as scope:

            def read(line: bytes) -> None:
                reading.set()
                scope.cancel()

            await streams(server.port).post_sse("/completion", {}, read, never)
        assert scope.cancelled_caught
        with trio.fail_after(5):
            await server.closed_by_client.wait()
    assert reading.is_set()


async def test_an_error_raised_by_read_ends_the_stream() -> None:
    def read(line: bytes) -> None:
        raise EngineError(ErrorCode.WORKER_RESET, "engine error: boom", True)

    async with serving(sending(ONE_FRAME)) as server:
        with pytest.raises(EngineError, match="boom"):
            await streams(server.port).post_sse("/completion", {}, read, never)
        with trio.fail_after(5):
            await server.closed_by_client.wait()


async def test_the_service_reads_http_engines_on_sockets_and_others_through_httpx() -> None:
    for url, kind in (("http://127.0.0.1:1", "SocketStreams"), ("https://box:1", "HttpxStreams")):
        async with httpx.AsyncClient(base_url=url) as client:
            chosen = streams_for(client, api_key="", connect_timeout_s=1, read_timeout_s=1)
        assert type(chosen).__name__ == kind


async def test_the_llamacpp_adapter_streams_through_sockets_end_to_end() -> None:
    final = b'{"content":"","stop":true,"tokens_predicted":2,"stop_type":"limit"}'
    payloads = [b'{"content":"a"}', b'{"content":"b"}', final]
    async with serving(sending(sse_chunks(payloads))) as server:
        config = AdapterConfig(endpoint=f"http://127.0.0.1:{server.port}")
        async with httpx.AsyncClient(base_url=config.endpoint) as client:
            adapter = LlamaCppAdapter(client, config, streams(server.port))
            pieces: list[str] = []
            done = await adapter.complete({"prompt": "x"}, pieces.append)
    assert pieces == ["a", "b"]
    assert done.tokens_out == 2
    assert json.loads(server.requests[0].partition(b"\r\n\r\n")[2])["stream"] is True
