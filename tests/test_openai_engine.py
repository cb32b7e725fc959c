"""The OpenAI-compatible adapter: against the fake llama-server's ``/v1`` endpoints, against
httpx.MockTransport (error bodies of several servers, stream ends, timings), and end to end
against the real llama-server's OpenAI endpoints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from orchestra.actors.admission import _prompt_token_bound
from orchestra.engine import cache as engine_cache
from orchestra.engine.openai_compat import OpenAICompatAdapter
from orchestra.engine.process import EngineCommand, run_engine
from orchestra.engine.protocol import Completion, ToolCallDelta
from orchestra.errors import EngineError, ErrorCode
from orchestra.task import Chat, TaskRequest
from orchestra.testing.fake_llama import FakeLlamaServer, embedding, generated_word, tokenize

from .engine import free_port, require_engine

MODEL = "served-model"


@pytest.fixture
async def fake_url(fake: FakeLlamaServer, nursery: trio.Nursery) -> str:
    url: str = await nursery.start(fake.serve)
    return url


@asynccontextmanager
async def open_engine(
    url: str, *, api_key: str = "", slots: int = 2
) -> AsyncIterator[OpenAICompatAdapter]:
    async with OpenAICompatAdapter.open_client(url, connect_timeout_s=5, api_key=api_key) as c:
        yield OpenAICompatAdapter(c, MODEL, slots, decode_timeout_s=5, connect_timeout_s=5)


def ignore(piece: object) -> None:
    """A sink for pieces a test does not look at."""


def words(prompt: str, seed: int, n: int) -> list[str]:
    """The pieces the fake generates for ``prompt`` and ``seed``."""
    return [" " + generated_word(prompt, seed, i) for i in range(n)]


# -- completions against the fake ------------------------------------------------------------


async def test_a_streamed_completion_sends_an_openai_body(
    fake: FakeLlamaServer, fake_url: str
) -> None:
    prompt = "Once upon a time"
    params = {
        "prompt": prompt, "n_predict": 5, "seed": 7, "temperature": 0.5, "top_k": 40,
        "min_p": 0.05, "repeat_penalty": 1.1, "stop": [], "logit_bias": [[5, -1.5]],
        "cache_prompt": False, "id_slot": 1, "n_probs": 3,
    }  # fmt: skip
    pieces: list[str] = []
    async with open_engine(f"{fake_url}/v1/") as engine:
        done = await engine.complete(params, pieces.append)
    assert pieces == words(prompt, 7, 5)
    assert (done.tokens_out, done.stop_type, done.slot) == (5, "limit", None)
    assert done.tokens_in == len(tokenize(prompt, add_special=True))
    assert done.decode_time_ms >= 0 and done.prompt_time_ms == 0.5  # the fake's timings
    assert fake.v1_completion_bodies == [
        {
            "model": MODEL, "prompt": prompt, "max_tokens": 5, "seed": 7, "temperature": 0.5,
            "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1, "logit_bias": {"5": -1.5},
            "stream": True, "stream_options": {"include_usage": True},
        }
    ]  # fmt: skip


async def test_a_stop_string_ends_the_completion(fake_url: str) -> None:
    prompt, seed = "Tell me a story", 3
    text = "".join(words(prompt, seed, 12))
    stop = words(prompt, seed, 12)[4]
    pieces: list[str] = []
    async with open_engine(fake_url) as engine:
        done = await engine.complete(
            {"prompt": prompt, "n_predict": 12, "seed": seed, "stop": [stop]}, pieces.append
        )
    assert "".join(pieces) == text[: text.index(stop)]
    assert done.stop_type == "eos"  # llama-server does not say which stop string matched


async def test_a_json_schema_is_sent_both_ways(fake: FakeLlamaServer, fake_url: str) -> None:
    schema = {"type": "object"}
    async with open_engine(fake_url) as engine:
        await engine.complete({"prompt": "p", "n_predict": 1, "json_schema": schema}, ignore)
    body = fake.v1_completion_bodies[-1]
    assert body["json_schema"] == schema
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }


# -- chat against the fake -------------------------------------------------------------------


async def test_chat_streams_the_fakes_text(fake: FakeLlamaServer, fake_url: str) -> None:
    messages = [{"role": "user", "content": "Hello there"}]
    schema = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    params = {
        "messages": messages, "n_predict": 6, "seed": 11, "cache_prompt": True, "id_slot": 0,
        "response_format": schema,
    }  # fmt: skip
    pieces: list[Any] = []
    async with open_engine(fake_url) as engine:
        done = await engine.chat(params, pieces.append)
    async with httpx.AsyncClient(base_url=fake_url) as http:
        whole = await http.post(
            "/v1/chat/completions", json={"messages": messages, "max_tokens": 6, "seed": 11}
        )
    assert "".join(pieces) == whole.json()["choices"][0]["message"]["content"]
    assert all(isinstance(p, str) for p in pieces) and len(pieces) == 6
    assert (done.tokens_out, done.stop_type) == (6, "limit")
    assert done.tokens_in == whole.json()["usage"]["prompt_tokens"]
    sent = fake.chat_bodies[0]
    assert sent == {
        "model": MODEL, "messages": messages, "max_tokens": 6, "seed": 11,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": {"type": "object"}},
        },
        "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip


async def test_chat_streams_a_tool_call(fake_url: str) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    params = {
        "messages": [{"role": "user", "content": "Weather in Paris? [[call:get_weather]]"}],
        "tools": [tool],
        "tool_choice": "auto",
        "n_predict": 32,
    }
    pieces: list[Any] = []
    async with open_engine(fake_url) as engine:
        done = await engine.chat(params, pieces.append)
    assert all(isinstance(p, ToolCallDelta) and p.index == 0 for p in pieces)
    first, *rest = pieces
    assert first.name == "get_weather" and first.id and first.arguments == ""
    assert set(json.loads("".join(p.arguments for p in rest))) == {"city"}
    assert done.stop_type == "tool_calls" and done.tokens_out == len(pieces)


# -- stream ends, faults, cancellation -------------------------------------------------------


@pytest.mark.parametrize("chat", [False, True], ids=["complete", "chat"])
async def test_a_stream_cut_or_failing_mid_way_is_a_worker_reset(fake_url: str, chat: bool) -> None:
    async with open_engine(fake_url) as engine:
        for directive, says in [("[[drop:2]]", "connection lost"), ("[[error-mid:2]]", "Context")]:
            pieces: list[Any] = []
            messages = [{"role": "user", "content": f"hi {directive}"}]
            call = (
                engine.chat({"messages": messages, "n_predict": 8}, pieces.append)
                if chat
                else engine.complete({"prompt": f"hi {directive}"}, pieces.append)
            )
            with pytest.raises(EngineError) as caught:
                await call
            assert caught.value.code is ErrorCode.WORKER_RESET and caught.value.retriable
            assert not caught.value.unreachable and says in caught.value.message
            assert len(pieces) == 2


@pytest.mark.parametrize("chat", [False, True], ids=["complete", "chat"])
async def test_cancel_mid_stream_closes_the_connection(
    fake: FakeLlamaServer, fake_url: str, chat: bool
) -> None:
    two = trio.Event()
    pieces: list[Any] = []

    def on_piece(piece: Any) -> None:
        pieces.append(piece)
        if len(pieces) == 2:
            two.set()

    with trio.fail_after(10):
        async with open_engine(fake_url) as engine, trio.open_nursery() as nursery:
            if chat:
                messages = [{"role": "user", "content": "go [[hang:2]]"}]
                nursery.start_soon(engine.chat, {"messages": messages}, on_piece)
            else:
                nursery.start_soon(engine.complete, {"prompt": "go [[hang:2]]"}, on_piece)
            await two.wait()
            assert fake.busy_slots == 1
            nursery.cancel_scope.cancel()
        await fake.wait_until(lambda: fake.busy_slots == 0 and fake.disconnects == 1)
    assert len(pieces) == 2 and fake.completions_finished == 0


async def test_an_unreachable_engine() -> None:
    async with open_engine(f"http://127.0.0.1:{free_port()}") as engine:
        calls = [
            engine.complete({"prompt": "p"}, ignore),
            engine.chat({"messages": []}, ignore),
            engine.health(),
            engine.props(),
            engine.embed(["a"]),
        ]
        for call in calls:
            with pytest.raises(EngineError) as caught:
                await call
            assert caught.value.unreachable and caught.value.retriable
            assert caught.value.code is ErrorCode.WORKER_RESET


# -- health, props, embeddings, what there is not --------------------------------------------


async def test_health_and_props(fake: FakeLlamaServer, fake_url: str) -> None:
    fake.api_key = "s3cret"
    async with open_engine(fake_url, api_key="s3cret", slots=3) as engine:
        probe = await engine.health()
        assert probe.ready and probe.detail == "ready"
        props = await engine.props()
        assert props.total_slots == 3 and props.n_ctx == 0 and props.model_path == MODEL
        assert props.build_info == f"openai-compatible {fake_url} (llamacpp)"
        fake.set_loading(True)
        probe = await engine.health()
        assert not probe.ready and probe.detail == "Loading model"
        with pytest.raises(EngineError) as caught:
            await engine.props()
        assert caught.value.code is ErrorCode.POOL_UNREADY
    fake.set_loading(False)
    async with open_engine(fake_url, api_key="wrong") as engine:
        probe = await engine.health()
        assert not probe.ready and "refused the api key (HTTP 401)" in probe.detail


async def test_props_reads_vllms_max_model_len() -> None:
    cards = {
        "object": "list",
        "data": [
            {"id": "other", "owned_by": "vllm", "max_model_len": 1},
            {"id": MODEL, "object": "model", "owned_by": "vllm", "max_model_len": 32768},
        ],
    }
    props = await mocked(lambda request: httpx.Response(200, json=cards)).props()
    assert (props.n_ctx, props.build_info) == (32768, "openai-compatible http://engine (vllm)")


async def test_embed(fake: FakeLlamaServer, fake_url: str) -> None:
    async with open_engine(fake_url) as engine:
        with pytest.raises(EngineError) as caught:
            await engine.embed(["a"])
        assert caught.value.code is ErrorCode.INVALID_PARAMS and not caught.value.retriable
        assert "does not serve embeddings" in caught.value.message
        fake.embeddings = True
        texts = ["c", "a b"]
        result = await engine.embed(texts)
        with pytest.raises(TypeError):
            await engine.embed("one string")
    assert result.vectors == tuple(embedding(t) for t in texts)
    assert result.prompt_tokens == sum(len(tokenize(t, add_special=True)) for t in texts)
    assert fake.embedding_bodies == [{"model": MODEL, "input": texts, "encoding_format": "float"}]


async def test_token_counts_are_admissions_byte_bounds_and_no_slot_is_erased() -> None:
    engine = mocked(lambda request: pytest.fail("no request expected"))
    text = "héllo wörld"
    assert await engine.count_tokens(text) == _prompt_token_bound(text)
    assert await engine.erase_slot(0) is False
    tool = {"type": "function", "function": {"name": "f", "parameters": {}}}
    for tools in [(), (tool,)]:
        chat = Chat(messages=({"role": "user", "content": "ça va?"},), tools=tools)
        task = TaskRequest(prompt=chat, max_tokens=4)
        stand_in = await engine.render_chat(task.engine_params())
        assert await engine.count_tokens(stand_in) == _prompt_token_bound(chat)


# -- against httpx.MockTransport -------------------------------------------------------------


def mocked(handler: Callable[[httpx.Request], httpx.Response]) -> OpenAICompatAdapter:
    client = httpx.AsyncClient(base_url="http://engine", transport=httpx.MockTransport(handler))
    return OpenAICompatAdapter(client, MODEL, 1, decode_timeout_s=1, connect_timeout_s=1)


def sse(*objects: Any, done: bool = True) -> bytes:
    frames = [b"data: " + json.dumps(o).encode() + b"\n\n" for o in objects]
    return b"".join(frames) + (b"data: [DONE]\n\n" if done else b"")


def text(piece: str, finish: str | None = None, **choice: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "text": piece, "finish_reason": finish, **choice}]}


def vllm_error(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": kind, "param": None, "code": code}


def openai_error(message: str, kind: str, code: Any = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@pytest.mark.parametrize(
    ("status", "body", "code", "retriable", "says"),
    [
        (400, openai_error("bad", "invalid_request_error", 400), ErrorCode.INVALID_PARAMS,
         False, "engine refused: bad"),
        (422, {"detail": [{"loc": ["body", "max_tokens"], "msg": "must be positive"}]},
         ErrorCode.INVALID_PARAMS, False, "must be positive"),
        (400, vllm_error("This model's maximum context length is 2048 tokens. However, you "
                         "requested 3000 tokens", "BadRequestError", 400),
         ErrorCode.CTX_LIMIT_EXCEEDED, False, "maximum context length"),
        (400, openai_error("request (1101 tokens) exceeds the available context size (1024 "
                           "tokens), try increasing it", "exceed_context_size_error", 400),
         ErrorCode.CTX_LIMIT_EXCEEDED, False, "1101 tokens"),
        (400, openai_error("The input (5000 tokens) is longer than the model's context length "
                           "(4096 tokens).", "BadRequestError"),
         ErrorCode.CTX_LIMIT_EXCEEDED, False, "5000 tokens"),
        (400, openai_error("too long", "invalid_request_error", "context_length_exceeded"),
         ErrorCode.CTX_LIMIT_EXCEEDED, False, "too long"),
        (401, openai_error("Invalid API Key", "authentication_error", 401),
         ErrorCode.INVALID_PARAMS, False, "refused the api key (HTTP 401): Invalid API Key"),
        (403, {"error": "forbidden"}, ErrorCode.INVALID_PARAMS, False,
         "refused the api key (HTTP 403)"),
        (404, openai_error(f"The model `{MODEL}` does not exist.", "NotFoundError", 404),
         ErrorCode.INVALID_PARAMS, False, f"does not serve model {MODEL!r}"),
        (404, {"error": f'model "{MODEL}" not found, try pulling it first'},
         ErrorCode.INVALID_PARAMS, False, f"does not serve model {MODEL!r}"),
        (404, {"detail": "Not Found"}, ErrorCode.INVALID_PARAMS, False, "has no /v1/"),
        (429, openai_error("Rate limit reached", "rate_limit_error"), ErrorCode.POOL_UNREADY,
         True, "Rate limit"),
        (503, openai_error("Loading model", "unavailable_error", 503), ErrorCode.POOL_UNREADY,
         True, "Loading model"),
        (500, openai_error("boom", "server_error", 500), ErrorCode.WORKER_RESET, True,
         "engine error: boom"),
        (502, b"<html>bad gateway</html>", ErrorCode.WORKER_RESET, True, "bad gateway"),
        (504, None, ErrorCode.WORKER_RESET, True, "HTTP 504"),
    ],
)  # fmt: skip
async def test_error_answers_map_to_wire_codes(
    status: int, body: Any, code: ErrorCode, retriable: bool, says: str
) -> None:
    content = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content)

    engine = mocked(handler)
    for call in (engine.complete({"prompt": "p"}, ignore), engine.chat({"messages": []}, ignore)):
        with pytest.raises(EngineError) as caught:
            await call
        assert (caught.value.code, caught.value.retriable) == (code, retriable)
        assert says in caught.value.message and not caught.value.unreachable


@pytest.mark.parametrize(
    ("status", "body", "code", "says"),
    [
        (501, openai_error("This server does not support embeddings. Start it with "
                           "`--embeddings`", "not_supported_error", 501),
         ErrorCode.INVALID_PARAMS, "does not serve embeddings"),
        (404, {"detail": "Not Found"}, ErrorCode.INVALID_PARAMS, "does not serve embeddings"),
        (404, openai_error(f"The model `{MODEL}` does not exist.", "NotFoundError", 404),
         ErrorCode.INVALID_PARAMS, f"does not serve model {MODEL!r}"),
        (500, openai_error("input (900 tokens) is too large to process. increase the physical "
                           "batch size", "server_error", 500),
         ErrorCode.CTX_LIMIT_EXCEEDED, "900 tokens"),
        (400, vllm_error("This model's maximum context length is 512 tokens. However, you "
                         "requested 900 tokens in the input for embedding generation.",
                         "BadRequestError", 400), ErrorCode.CTX_LIMIT_EXCEEDED, "512 tokens"),
        (200, {"data": [{"index": 0, "embedding": [0.5]}]}, ErrorCode.WORKER_RESET,
         "1 embeddings for 2 inputs"),
    ],
)  # fmt: skip
async def test_embed_failures_map_to_wire_codes(
    status: int, body: Any, code: ErrorCode, says: str
) -> None:
    engine = mocked(lambda request: httpx.Response(status, json=body))
    with pytest.raises(EngineError) as caught:
        await engine.embed(["a", "b"])
    assert caught.value.code is code and says in caught.value.message


@pytest.mark.parametrize(
    ("frames", "says"),
    [
        (sse(text("a"), text("", "stop"), done=False), "before its final chunk"),
        (sse(text("a")), "before its final chunk"),
        (b"data: {nope\n\n", "malformed chunk"),
        (sse(text("a"), {"error": {"message": "boom", "type": "server_error"}}), "boom"),
    ],
    ids=["no-done", "no-finish", "malformed", "error-chunk"],
)
async def test_a_stream_that_does_not_end_properly_is_a_worker_reset(
    frames: bytes, says: str
) -> None:
    engine = mocked(lambda request: httpx.Response(200, stream=httpx.ByteStream(frames)))
    with pytest.raises(EngineError) as caught:
        await engine.complete({"prompt": "p"}, ignore)
    assert caught.value.code is ErrorCode.WORKER_RESET and caught.value.retriable
    assert says in caught.value.message


async def test_an_error_chunk_mid_chat_is_mapped_by_its_code() -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
    error = vllm_error("maximum context length exceeded", "BadRequestError", 400)
    body = httpx.ByteStream(sse(chunk, {"error": error}))
    engine = mocked(lambda request: httpx.Response(200, stream=body))
    pieces: list[Any] = []
    with pytest.raises(EngineError) as caught:
        await engine.chat({"messages": []}, pieces.append)
    assert caught.value.code is ErrorCode.CTX_LIMIT_EXCEEDED and pieces == ["x"]


async def test_a_silent_engine_is_a_decode_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("silent", request=request)

    with pytest.raises(EngineError) as caught:
        await mocked(handler).complete({"prompt": "p"}, ignore)
    assert caught.value.code is ErrorCode.DECODE_TIMEOUT and caught.value.retriable


@attrs.define
class Paced(httpx.AsyncByteStream):
    """A response body whose frames come ``gap_s`` apart."""

    frames: list[bytes]
    gap_s: float

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, frame in enumerate(self.frames):
            if i:
                await trio.sleep(self.gap_s)
            yield frame


async def test_without_timings_the_decode_time_is_measured_and_vllm_names_the_stop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[httpx.Request] = []
    frames = [
        sse(text("a"), done=False),
        sse(text("b"), done=False),
        sse(text("", "stop", stop_reason="\n\n"), done=False),
        sse({"choices": [], "usage": {"completion_tokens": 3, "prompt_tokens": 4,
                                      "prompt_tokens_details": None}}),
    ]  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=Paced(frames, 0.25))

    pieces: list[str] = []
    done = await mocked(handler).complete({"prompt": "p", "stop": ["\n\n"]}, pieces.append)
    assert pieces == ["a", "b"]
    assert done.decode_time_ms == pytest.approx(250.0)
    assert attrs.evolve(done, decode_time_ms=0.0) == Completion(
        tokens_out=3, decode_time_ms=0.0, stop_type="word", tokens_in=4
    )
    assert seen[0].url.path == "/v1/completions"
    assert seen[0].headers["connection"] == "close"


async def test_without_usage_the_pieces_are_counted() -> None:
    body = httpx.ByteStream(sse(text("a"), text(" b"), text("", "length")))
    engine = mocked(lambda request: httpx.Response(200, stream=body))
    done = await engine.complete({"prompt": "p"}, ignore)
    assert (done.tokens_out, done.stop_type, done.tokens_in) == (2, "limit", None)


async def test_the_client_sends_the_key_to_the_servers_root() -> None:
    async with OpenAICompatAdapter.open_client(
        "https://api.example/proxy/v1/", connect_timeout_s=2, api_key="k"
    ) as client:
        assert str(client.base_url) == "https://api.example/proxy/"
        assert client.headers["authorization"] == "Bearer k"
    with pytest.raises(ValueError, match="slots"):
        OpenAICompatAdapter(client, MODEL, 0)


# -- end to end, against the real llama-server's OpenAI endpoints ----------------------------


@attrs.define
class Lines:
    """Wakes waiters whenever the engine writes a line."""

    changed: trio.Event = attrs.field(factory=trio.Event)

    def saw(self, stream: str, line: str) -> None:
        self.changed.set()
        self.changed = trio.Event()


async def wait_ready(engine: OpenAICompatAdapter, lines: Lines) -> None:
    """Probe the engine each time it writes a line, until it answers ready."""
    while True:
        changed = lines.changed
        try:
            if (await engine.health()).ready:
                return
        except EngineError as exc:
            if not exc.unreachable:
                raise
        await changed.wait()


async def test_against_the_real_llama_server() -> None:
    require_engine()
    installed, model = engine_cache.installed_engine("cpu"), engine_cache.installed_model()
    assert installed is not None and model is not None
    command = EngineCommand(
        binary=installed.binary, model=model, port=free_port(), ctx_size=1024, parallel=1,
        threads=1, gpu_layers=0, api_key="e2e-key", embeddings=True,
    )  # fmt: skip
    lines = Lines()
    url = f"http://127.0.0.1:{command.port}/v1"
    async with (
        trio.open_nursery() as nursery,
        OpenAICompatAdapter.open_client(url, connect_timeout_s=5, api_key="e2e-key") as client,
    ):
        await nursery.start(partial(run_engine, command, stop_grace_s=5, on_line=lines.saw))
        engine = OpenAICompatAdapter(client, str(model), 1, decode_timeout_s=60)
        with trio.fail_after(120):
            await wait_ready(engine, lines)
            assert (await engine.props()).build_info.endswith("(llamacpp)")

            async def complete(**params: Any) -> tuple[str, Completion]:
                pieces: list[str] = []
                body = {"prompt": "The capital of France is", "n_predict": 12, **params}
                done = await engine.complete(body, pieces.append)
                return "".join(pieces), done

            for temperature in (0.0, 0.8):
                first, done = await complete(seed=42, temperature=temperature, id_slot=0)
                assert first and 0 < done.tokens_out <= 12 and done.tokens_in
                assert done.stop_type in ("limit", "eos") and done.decode_time_ms > 0
                again, _ = await complete(seed=42, temperature=temperature)
                assert again == first

            with pytest.raises(EngineError) as caught:
                await complete(prompt="word " * 1100)
            assert caught.value.code is ErrorCode.CTX_LIMIT_EXCEEDED

            pieces: list[Any] = []
            messages = [{"role": "user", "content": "Say hello."}]
            params = {"messages": messages, "n_predict": 8, "seed": 1, "temperature": 0.0}
            done = await engine.chat(params, pieces.append)
            assert pieces and all(isinstance(p, str) for p in pieces)
            assert 0 < done.tokens_out <= 8 and done.stop_type in ("limit", "eos")

            vectors = (await engine.embed(["hello", "world"])).vectors
            assert len(vectors) == 2 and len(vectors[0]) > 0
        nursery.cancel_scope.cancel()
