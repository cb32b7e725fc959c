"""The SDK's calls for several models: ``models()`` (old and new shapes), ``load_model()`` (by
id, and by path: registered first), ``unload_model()``, ``embed()``, and the model a task or
a chat goes to (``default_model`` and a call's ``model=``), exactly, over an
``httpx.MockTransport`` that answers the wire contract."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from orchestra.sdk import (
    AsyncClient,
    CatalogModel,
    Client,
    Embeddings,
    ErrorCode,
    ParseError,
    ServerError,
    TaskRequest,
    UnloadedModel,
)
from orchestra.sdk._async import LOAD_TIMEOUT_S, model_file

# -- the wire ---------------------------------------------------------------------------------

OLD_ENTRY: dict[str, Any] = {
    "id": "served",
    "object": "model",
    "created": 1_700_000_000,
    "owned_by": "orchestra",
    "path": "/models/served.gguf",
    "sha256": None,
    "digest": None,
    "trust_state": "unverified",
    "state": "active",
    "size_bytes": 2048,
    "registered_at": "2023-11-14T22:13:20Z",
    "verified_at": None,
    "loaded": True,
    "context": 2048,
}
"""A model as a server of one model lists it (no residency, memory, pool...)."""


def entry(model_id: str, **fields: Any) -> dict[str, Any]:
    """A model as a server of several models lists it."""
    return {
        **OLD_ENTRY,
        "id": model_id,
        "path": f"/models/{model_id}.gguf",
        "loaded": False,
        "context": None,
        "aliases": [],
        "residency": "unloaded",
        "error": None,
        "memory_mb": None,
        "memory_source": None,
        "last_used": None,
        "idle_s": None,
        "idle_unload_s": None,
        "pool": None,
        "default": False,
        "keep_loaded": False,
        "embeddings": False,
        "running": 0,
        "waiting": 0,
        "load_ms": None,
        **fields,
    }


LOADED = {"loaded": True, "context": 4096, "residency": "loaded", "memory_mb": 3300,
          "memory_source": "measured", "pool": "gemma3", "load_ms": 4200}  # fmt: skip
ACCEPTED = {"task_id": "t", "queue_position": 0, "predicted_start_ms": 0, "stream_url": "/s"}
_CHUNK = {"id": "chatcmpl-t", "object": "chat.completion.chunk", "model": "m"}
_FRAMES = (
    {**_CHUNK, "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]},
    {**_CHUNK, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                        "total_tokens": 2}},
)  # fmt: skip
CHAT_STREAM = b"".join(b"data: " + json.dumps(f).encode() + b"\n\n" for f in _FRAMES)
CHAT_STREAM += b"data: [DONE]\n\n"


def envelope(status: int, code: str, message: str = "no") -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message, "retriable": False})


@attrs.define
class FakeServer:
    """The several-models contract, answered from ``models``; every request kept in ``sent``."""

    models: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    sent: list[httpx.Request] = attrs.field(factory=list)
    refuse: httpx.Response | None = None
    """The answer to every load, instead of loading."""

    def body(self, index: int = -1) -> Any:
        return json.loads(self.sent[index].content)

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.sent]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        path, method = request.url.path, request.method
        if (method, path) == ("GET", "/v1/models"):
            return httpx.Response(200, json={"object": "list", "data": [*self.models.values()]})
        if (method, path) == ("POST", "/v1/catalog/models"):
            given = json.loads(request.content)
            created = given["id"] not in self.models
            self.models.setdefault(given["id"], entry(given["id"], path=given["path"]))
            return httpx.Response(201 if created else 200, json=self.models[given["id"]])
        if (method, path) == ("POST", "/v1/tasks"):
            return httpx.Response(202, json=ACCEPTED)
        if (method, path) == ("POST", "/v1/chat/completions"):
            headers = {"content-type": "text/event-stream", "X-Task-Id": "t"}
            return httpx.Response(200, headers=headers, content=CHAT_STREAM)
        if (method, path) == ("POST", "/v1/embeddings"):
            return self.embeddings(json.loads(request.content))
        parts = path.split("/")  # "", "v1", "models", id, action
        if method == "POST" and parts[2:3] == ["catalog"] and parts[-1] == "verify":
            model = self.models[parts[4]]
            model.update(trust_state="verified")
            return httpx.Response(200, json=model)
        if method == "POST" and len(parts) == 5 and parts[2] == "models":
            model = self.models.get(parts[3])
            if model is None:
                return envelope(404, "NOT_FOUND", f"no model {parts[3]!r}")
            if parts[4] == "load":
                if self.refuse is not None:
                    return self.refuse
                model.update(LOADED, pool=parts[3])
                return httpx.Response(200, json=model)
            if parts[4] == "unload":
                model.update(loaded=False, context=None, residency="unloaded", pool=None)
                forced = request.url.params.get("force") == "true"
                return httpx.Response(200, json={**model, "cancelled": 2 if forced else 0})
        return envelope(404, "NOT_FOUND", f"no route {method} {path}")

    def embeddings(self, body: Mapping[str, Any]) -> httpx.Response:
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        model = body.get("model", "nomic")
        if model not in self.models:
            error = {"message": f"model {model!r} is not here", "type": "invalid_request_error",
                     "param": "model", "code": "NOT_FOUND", "retriable": False}  # fmt: skip
            return httpx.Response(404, json={"error": error})
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(text)), i, 0.5]}
            for i, text in enumerate(texts)
        ]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": data[::-1],  # in any order: the SDK puts them in the inputs' order
                "model": model,
                "usage": {"prompt_tokens": 3 * len(texts), "total_tokens": 3 * len(texts)},
            },
        )


def client_of(server: FakeServer, **options: Any) -> AsyncClient:
    return AsyncClient("http://mock", transport=httpx.MockTransport(server), **options)


def read_timeout(request: httpx.Request) -> float:
    timeout: Mapping[str, float] = request.extensions["timeout"]
    return timeout["read"]


# -- models() ---------------------------------------------------------------------------------


async def test_an_older_servers_models_get_the_defaults() -> None:
    unloaded = {**OLD_ENTRY, "id": "spare", "loaded": False, "context": None}
    server = FakeServer({"served": OLD_ENTRY, "spare": unloaded})
    async with client_of(server) as client:
        served, spare = await client.models()
    assert (served.id, served.loaded, served.context) == ("served", True, 2048)
    # "not said" (then `loaded` says whether it is loaded)
    assert (served.residency, spare.residency) == (None, None)
    assert served.aliases == () and served.error is None and served.pool is None
    assert (served.memory_mb, served.memory_source, served.last_used) == (None, None, None)
    assert (served.idle_s, served.idle_unload_s, served.load_ms) == (None, None, None)
    assert (served.default, served.keep_loaded, served.embeddings) == (False, False, False)
    assert (served.running, served.waiting) == (0, 0)


async def test_the_new_fields_are_read() -> None:
    gemma = entry(
        "gemma3",
        **LOADED,
        aliases=["gemma", "g3"],
        last_used="2026-01-02T03:04:05Z",
        idle_s=12.5,
        idle_unload_s=300,
        default=True,
        keep_loaded=True,
        running=1,
        waiting=2,
    )
    failed = entry("qwen", residency="failed", error="out of memory", memory_mb=900,
                   memory_source="estimated")  # fmt: skip
    async with client_of(FakeServer({"gemma3": gemma, "qwen": failed})) as client:
        first, second = await client.models()
    assert first == CatalogModel(
        id="gemma3",
        object="model",
        created=OLD_ENTRY["created"],
        owned_by="orchestra",
        path="/models/gemma3.gguf",
        sha256=None,
        digest=None,
        trust_state="unverified",
        state="active",
        size_bytes=2048,
        registered_at=OLD_ENTRY["registered_at"],
        verified_at=None,
        loaded=True,
        context=4096,
        aliases=("gemma", "g3"),
        residency="loaded",
        memory_mb=3300,
        memory_source="measured",
        last_used="2026-01-02T03:04:05Z",
        idle_s=12.5,
        idle_unload_s=300.0,
        pool="gemma3",
        default=True,
        keep_loaded=True,
        running=1,
        waiting=2,
        load_ms=4200,
    )
    assert (second.residency, second.error, second.memory_source) == (
        "failed",
        "out of memory",
        "estimated",
    )


async def test_a_mistyped_new_field_is_a_parse_error() -> None:
    server = FakeServer({"x": entry("x", running="two")})
    async with client_of(server) as client:
        with pytest.raises(ParseError, match="running"):
            await client.models()


# -- load and unload --------------------------------------------------------------------------


async def test_load_by_id_waits_long_and_returns_the_model() -> None:
    server = FakeServer({"gemma3": entry("gemma3")})
    async with client_of(server) as client:
        model = await client.load_model("gemma3")
    assert server.paths() == ["POST /v1/models/gemma3/load"]
    assert server.body() == {}
    assert read_timeout(server.sent[0]) >= LOAD_TIMEOUT_S == 600
    assert (model.residency, model.loaded, model.load_ms, model.pool) == (
        "loaded",
        True,
        4200,
        "gemma3",
    )


async def test_load_by_path_registers_the_file_under_its_name_then_loads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Qwen2.5-0.5B.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    server = FakeServer()
    async with client_of(server) as client:
        model = await client.load_model("Qwen2.5-0.5B.gguf")  # relative: made absolute
        again = await client.load_model(str(tmp_path / "Qwen2.5-0.5B.gguf"))
    assert (
        server.paths()
        == [
            "POST /v1/catalog/models",
            "POST /v1/catalog/models/Qwen2.5-0.5B/verify",
            "POST /v1/models/Qwen2.5-0.5B/load",
        ]
        * 2
    )
    sha256 = hashlib.sha256(b"GGUF").hexdigest()  # registered with the file's hash
    path = str(tmp_path / "Qwen2.5-0.5B.gguf")
    assert server.body(0) == {"id": "Qwen2.5-0.5B", "path": path, "sha256": sha256}
    assert server.body(0) == server.body(3)
    assert model.id == again.id == "Qwen2.5-0.5B" and model.residency == "loaded"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("gemma3", ("gemma3", None)),
        ("qwen2.5-coder", ("qwen2.5-coder", None)),  # a dot is not a path
        ("/m/gemma-3-4b.gguf", ("gemma-3-4b", "/m/gemma-3-4b.gguf")),
        ("/m/no-suffix", ("no-suffix", "/m/no-suffix")),  # a separator is
        ("~/m/x.gguf", ("x", os.path.expanduser("~/m/x.gguf"))),
    ],
)
def test_what_load_model_takes_for_a_path(given: str, expected: tuple[str, str | None]) -> None:
    assert model_file(given) == expected


@pytest.mark.parametrize(
    ("refusal", "status", "code"),
    [
        (envelope(503, "MODEL_LOAD_FAILED", "llama-server exited"), 503, "MODEL_LOAD_FAILED"),
        (envelope(503, "MODEL_TOO_LARGE", "needs 9000 MiB, 4000 free"), 503, "MODEL_TOO_LARGE"),
        (envelope(409, "CONFLICT", "retired"), 409, "CONFLICT"),
    ],
)
async def test_a_load_refused_raises_the_servers_error(
    refusal: httpx.Response, status: int, code: str
) -> None:
    server = FakeServer({"gemma3": entry("gemma3")}, refuse=refusal)
    async with client_of(server) as client:
        with pytest.raises(ServerError) as caught:
            await client.load_model("gemma3")
    assert (caught.value.status, caught.value.code) == (status, ErrorCode(code))


async def test_loading_an_unknown_id_is_not_found() -> None:
    async with client_of(FakeServer()) as client:
        with pytest.raises(ServerError) as caught:
            await client.load_model("nope")
    assert (caught.value.status, caught.value.code) == (404, ErrorCode.NOT_FOUND)


@pytest.mark.parametrize(("force", "query", "cancelled"), [(False, "", 0), (True, "force=true", 2)])
async def test_unload_sends_force_as_a_query(force: bool, query: str, cancelled: int) -> None:
    server = FakeServer({"gemma3": entry("gemma3", **LOADED)})
    async with client_of(server) as client:
        model = await client.unload_model("gemma3", force=force)
    (request,) = server.sent
    assert (request.url.path, request.url.query.decode()) == ("/v1/models/gemma3/unload", query)
    assert server.body() == {} and read_timeout(request) >= LOAD_TIMEOUT_S
    assert isinstance(model, UnloadedModel)
    assert (model.residency, model.loaded, model.cancelled) == ("unloaded", False, cancelled)


# -- embeddings -------------------------------------------------------------------------------


async def test_embed_one_string_and_a_list() -> None:
    server = FakeServer({"nomic": entry("nomic", embeddings=True)})
    async with client_of(server) as client:
        one = await client.embed("hello")
        several = await client.embed(("a", "bb", "ccc"), model="nomic")
    assert server.body(0) == {"input": "hello", "encoding_format": "float"}  # no model: left out
    assert server.body(1) == {"input": ["a", "bb", "ccc"], "encoding_format": "float",
                              "model": "nomic"}  # fmt: skip
    assert one == Embeddings(vectors=((5.0, 0.0, 0.5),), model="nomic", prompt_tokens=3)
    assert one.vector == (5.0, 0.0, 0.5)
    # in the inputs' order, whatever the order of the answer's data
    assert several.vectors == ((1.0, 0.0, 0.5), (2.0, 1.0, 0.5), (3.0, 2.0, 0.5))
    assert (several.model, several.prompt_tokens) == ("nomic", 9)
    assert all(type(x) is float for vector in several.vectors for x in vector)


async def test_embed_errors_come_in_the_openai_shape() -> None:
    async with client_of(FakeServer()) as client:
        with pytest.raises(ServerError) as caught:
            await client.embed("x", model="nope")
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        404,
        ErrorCode.NOT_FOUND,
        "model",
    )


@pytest.mark.parametrize(
    "bad", [{"embedding": "nope"}, {"embedding": [1.0, True]}, {"embedding": [1, "2"]}]
)
async def test_an_embedding_that_is_not_numbers_is_a_parse_error(bad: dict[str, Any]) -> None:
    answer = {"object": "list", "data": [{"object": "embedding", "index": 0, **bad}],
              "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1}}  # fmt: skip
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=answer))
    async with AsyncClient("http://mock", transport=transport) as client:
        with pytest.raises(ParseError, match="embedding"):
            await client.embed("x")


# -- which model a task or a chat goes to -----------------------------------------------------


@pytest.mark.parametrize(
    ("default", "request_ref", "per_call", "sent"),
    [
        (None, None, None, None),  # neither: left out, the server's default model
        ("gemma3", None, None, "gemma3"),
        ("gemma3", None, "qwen", "qwen"),  # the call's wins
        (None, None, "qwen", "qwen"),
        ("gemma3", "llama", None, "llama"),  # the request's own model_ref is the call's
        ("gemma3", "llama", "qwen", "qwen"),
    ],
)
async def test_v1_tasks_send_model_ref(
    default: str | None, request_ref: str | None, per_call: str | None, sent: str | None
) -> None:
    server = FakeServer()
    async with client_of(server, default_model=default) as client:
        await client.submit(TaskRequest(prompt="p", model_ref=request_ref), model=per_call)
    body = server.body()
    assert body.get("model_ref") == sent and ("model_ref" in body) == (sent is not None)
    assert "model" not in body


@pytest.mark.parametrize(
    ("default", "per_call", "sent"),
    [
        (None, None, "default"),  # neither: "default", the server's default model
        ("gemma3", None, "gemma3"),
        ("gemma3", "qwen", "qwen"),
        (None, "qwen", "qwen"),
    ],
)
async def test_chats_send_model(default: str | None, per_call: str | None, sent: str) -> None:
    server = FakeServer()
    async with client_of(server, default_model=default) as client:
        answer = await client.chat([{"role": "user", "content": "hi"}], model=per_call)
        async with client.stream_chat([{"role": "user", "content": "hi"}], model=per_call) as s:
            streamed = await s.collect()
    assert answer.text == streamed.text == "hi"
    assert [body["model"] for body in (server.body(0), server.body(1))] == [sent, sent]
    assert "model_ref" not in server.body(0)


async def test_complete_sends_its_model_as_model_ref() -> None:
    stream = b"".join(
        f"id: {i}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()
        for i, (kind, data) in enumerate(
            [
                ("started", {"queue_position": 0, "predicted_start_ms": 0, "queue_wait_ms": 0}),
                ("token", {"t": "ok", "i": 0}),
                ("end", {"tokens_out": 1, "decode_time_ms": 1.0}),
            ]
        )
    )
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.url.path == "/v1/tasks":
            return httpx.Response(202, json=ACCEPTED)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream)

    transport = httpx.MockTransport(answer)
    async with AsyncClient("http://mock", transport=transport, default_model="a") as client:
        assert (await client.complete("p", model="b")).text == "ok"
        assert (await client.complete("p")).text == "ok"
    submitted = [json.loads(r.content) for r in sent if r.url.path == "/v1/tasks"]
    assert [body["model_ref"] for body in submitted] == ["b", "a"]


# -- the sync client --------------------------------------------------------------------------


def test_the_sync_client_mirrors_the_model_calls(tmp_path: Path) -> None:
    server = FakeServer({"gemma3": entry("gemma3"), "nomic": entry("nomic", embeddings=True)})
    model_path = tmp_path / "phi-4.gguf"
    model_path.write_bytes(b"GGUF")
    calls: list[Callable[[Client], Any]] = [
        lambda c: c.models(),
        lambda c: c.load_model("gemma3"),
        lambda c: c.load_model(str(model_path)),
        lambda c: c.unload_model("gemma3", force=True),
        lambda c: c.embed(["x", "yy"]),
        lambda c: c.submit(TaskRequest(prompt="p")),
        lambda c: c.submit(TaskRequest(prompt="p"), model="phi-4"),
        lambda c: c.chat([{"role": "user", "content": "hi"}]),
        lambda c: c.chat([{"role": "user", "content": "hi"}], model="gemma3"),
    ]
    with Client("http://mock", transport=httpx.MockTransport(server), default_model="nomic") as c:
        assert c.default_model == "nomic"
        listed, loaded, from_path, unloaded, vectors, *_ = [call(c) for call in calls]
        with c.stream_chat([{"role": "user", "content": "hi"}], model="phi-4") as stream:
            assert "".join(delta.content for delta in stream) == "hi"
        c.default_model = None
        c.submit(TaskRequest(prompt="p"))
    assert [m.id for m in listed] == ["gemma3", "nomic"]
    assert loaded.residency == from_path.residency == "loaded" and from_path.id == "phi-4"
    assert isinstance(unloaded, UnloadedModel) and unloaded.cancelled == 2
    assert len(vectors.vectors) == 2 and vectors.model == "nomic"
    bodies = {i: json.loads(r.content) for i, r in enumerate(server.sent) if r.method == "POST"}
    tasks = [
        b.get("model_ref") for i, b in bodies.items() if server.sent[i].url.path == "/v1/tasks"
    ]
    chats = [b["model"] for i, b in bodies.items() if "chat" in server.sent[i].url.path]
    embeds = [b["model"] for i, b in bodies.items() if "embeddings" in server.sent[i].url.path]
    assert tasks == ["nomic", "phi-4", None]
    assert chats == ["nomic", "gemma3", "phi-4"]
    assert embeds == ["nomic"]
