"""The fake llama-server over real HTTP: shapes, slots, disconnects and fault directives."""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

import httpx
import pytest
import trio

from orchestra.testing.fake_llama import (
    EMBEDDING_DIM,
    WORDS,
    FakeLlamaServer,
    embedding,
    tokenize,
)


def frames_of(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON objects of ``data:`` lines; every other line must be blank."""
    frames = []
    for line in lines:
        if line:
            assert line.startswith("data: "), line
            frames.append(json.loads(line.removeprefix("data: ")))
    return frames


async def stream_frames(client: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    """POST a streaming /completion and return all its frames."""
    async with client.stream("POST", "/completion", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        return frames_of([line async for line in response.aiter_lines()])


def assert_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status and error["type"] == kind
    message: str = error["message"]
    return message


# -- simple routes -----------------------------------------------------------------------


async def test_health_props_slots_shapes(client: httpx.AsyncClient, fake: FakeLlamaServer) -> None:
    fake.total_slots = 2
    health = await client.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    props = (await client.get("/props")).json()
    assert props["default_generation_settings"] == {"n_ctx": 1024, "params": {}}
    assert props["total_slots"] == 2
    assert props["model_path"] == "models/fake.gguf"
    assert props["build_info"] == "b0-unknown"
    assert props["is_sleeping"] is False
    assert "model_alias" in props
    slots = (await client.get("/slots")).json()
    assert slots == [
        {"id": 0, "n_ctx": 1024, "is_processing": False, "id_task": -1},
        {"id": 1, "n_ctx": 1024, "is_processing": False, "id_task": -1},
    ]
    assert_error(await client.get("/nope"), 404, "not_found_error")


async def test_tokenize(client: httpx.AsyncClient) -> None:
    plain = (await client.post("/tokenize", json={"content": "a b  c"})).json()["tokens"]
    assert len(plain) == 3 and all(isinstance(t, int) and t >= 2 for t in plain)
    assert plain[0] != plain[1]
    special = await client.post("/tokenize", json={"content": "a b  c", "add_special": True})
    assert special.json() == {"tokens": [1, *plain]}
    assert_error(await client.post("/tokenize", content=b"{nope"), 400, "invalid_request_error")
    assert_error(await client.post("/tokenize", json={"text": "x"}), 400, "invalid_request_error")


async def test_loading_answers_503_everywhere_then_200(
    client: httpx.AsyncClient, fake: FakeLlamaServer
) -> None:
    fake.set_loading(True)
    for response in (
        await client.get("/health"),
        await client.get("/props"),
        await client.post("/completion", json={"prompt": "hi"}),
    ):
        assert response.status_code == 503
        assert response.json() == {
            "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
        }
    fake.set_loading(False)
    assert (await client.get("/health")).status_code == 200


# -- completions -------------------------------------------------------------------------


async def test_stream_frames_end_with_the_final_object(client: httpx.AsyncClient) -> None:
    frames = await stream_frames(client, prompt="tell me a story", n_predict=5, seed=7)
    n_prompt = len(tokenize("tell me a story", add_special=True))
    *tokens, final = frames
    assert len(tokens) == 5
    for i, frame in enumerate(tokens):
        assert frame["stop"] is False and frame["id_slot"] == -1
        assert frame["tokens_predicted"] == i + 1 and frame["tokens_evaluated"] == n_prompt
        assert frame["content"].startswith(" ") and frame["content"][1:] in WORDS
        assert frame["tokens"] == tokenize(frame["content"])
    assert final["stop"] is True and final["content"] == "" and final["tokens"] == []
    assert final["id_slot"] == 0 and final["model"] == "models/fake.gguf"
    assert final["tokens_predicted"] == 5 and final["tokens_evaluated"] == n_prompt
    assert final["stop_type"] == "limit" and final["truncated"] is False
    timings = final["timings"]
    assert timings["predicted_n"] == 5 and timings["prompt_n"] == n_prompt
    assert timings["predicted_ms"] >= 0 and "predicted_per_second" in timings


async def test_generation_is_deterministic_per_prompt_and_seed(
    client: httpx.AsyncClient, fake: FakeLlamaServer
) -> None:
    async def text(**body: Any) -> str:
        response = await client.post("/completion", json={"n_predict": 12, **body})
        assert response.status_code == 200 and response.json()["stop"] is True
        content: str = response.json()["content"]
        return content

    first = await text(prompt="same", seed=1)
    assert first == await text(prompt="same", seed=1)
    assert first != await text(prompt="same", seed=2)
    assert first != await text(prompt="other", seed=1)
    streamed = await stream_frames(client, prompt="same", seed=1, n_predict=12)
    assert "".join(f["content"] for f in streamed) == first
    assert len((await client.post("/completions", json={"prompt": "x"})).json()["content"]) > 0
    assert [b.get("seed") for b in fake.completion_bodies] == [1, 1, 2, 1, 1, None]
    assert all("x-conversation-id" not in h for h in fake.completion_headers)
    assert fake.completions_started == fake.completions_finished == 6


async def test_n_predict_and_its_aliases(client: httpx.AsyncClient, fake: FakeLlamaServer) -> None:
    async def predicted(**body: Any) -> int:
        response = await client.post("/completion", json={"prompt": "p", **body})
        count: int = response.json()["tokens_predicted"]
        return count

    assert await predicted() == 16
    assert await predicted(n_predict=-1) == 16
    assert await predicted(max_tokens=3) == 3
    assert await predicted(n_predict=0) == 0
    response = await client.post("/completion", json={"prompt": "p"}, headers={"X-Test": "1"})
    assert response.headers["content-length"] == str(len(response.content))
    assert fake.completion_headers[-1]["x-test"] == "1"


async def test_bad_requests_are_400(client: httpx.AsyncClient) -> None:
    missing = await client.post("/completion", json={"n_predict": 2})
    assert assert_error(missing, 400, "invalid_request_error") == '"prompt" must be provided'
    assert_error(await client.post("/completion", content=b"]"), 400, "invalid_request_error")


async def test_exceeding_the_slot_context_is_400(
    client: httpx.AsyncClient, fake: FakeLlamaServer
) -> None:
    fake.n_ctx, fake.total_slots = 40, 2  # 20 tokens per slot
    fits = await client.post("/completion", json={"prompt": "one two three", "n_predict": 16})
    assert fits.status_code == 200
    response = await client.post("/completion", json={"prompt": "one two three four"})
    message = assert_error(response, 400, "exceed_context_size_error")
    assert message == (
        "request (21 tokens) exceeds the available context size (20 tokens), try increasing it"
    )
    assert response.json()["error"]["n_prompt_tokens"] == 5
    assert response.json()["error"]["n_ctx"] == 20


# -- directives --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "invalid_request_error"), (500, "server_error"), (503, "unavailable_error")],
)
async def test_error_before(client: httpx.AsyncClient, status: int, kind: str) -> None:
    response = await client.post(
        "/completion", json={"prompt": f"[[error-before:{status}]] x", "stream": True}
    )
    assert response.headers["content-type"].startswith("application/json")
    message = assert_error(response, status, kind)
    assert status != 503 or message == "no slot available"


async def test_error_mid(client: httpx.AsyncClient, fake: FakeLlamaServer) -> None:
    frames = await stream_frames(client, prompt="[[error-mid:2]] x", n_predict=5)
    assert [f.get("tokens_predicted") for f in frames[:2]] == [1, 2]
    assert frames[2] == {
        "error": {"code": 500, "message": "Context size has been exceeded.", "type": "server_error"}
    }
    assert len(frames) == 3
    response = await client.post("/completion", json={"prompt": "[[error-mid:2]] x"})
    assert_error(response, 500, "server_error")
    assert fake.busy_slots == 0


async def test_drop_cuts_the_connection_without_a_final_frame(
    client: httpx.AsyncClient, fake: FakeLlamaServer
) -> None:
    lines: list[str] = []

    async def read() -> None:
        body = {"prompt": "[[drop:3]] x", "n_predict": 10, "stream": True}
        async with client.stream("POST", "/completion", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                lines.append(line)

    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        await read()
    frames = frames_of(lines)
    assert [f["tokens_predicted"] for f in frames] == [1, 2, 3]
    assert not any(f["stop"] for f in frames)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/completion", json={"prompt": "[[drop:3]] x"})
    assert fake.busy_slots == 0 and fake.disconnects == 0
    assert (await client.get("/health")).status_code == 200  # the server lives on


async def test_empty_pieces_still_count(client: httpx.AsyncClient) -> None:
    frames = await stream_frames(client, prompt="[[empty:3]] x", n_predict=7)
    contents = [f["content"] for f in frames[:-1]]
    assert [c == "" for c in contents] == [False, False, True, False, False, True, False]
    assert [f["tokens_predicted"] for f in frames[:-1]] == list(range(1, 8))
    assert all(len(f["tokens"]) == 1 for f in frames[:-1])
    assert frames[-1]["tokens_predicted"] == 7


async def test_hang_then_disconnect_frees_the_slot(
    client: httpx.AsyncClient, fake: FakeLlamaServer
) -> None:
    body = {"prompt": "[[hang:2]] x", "n_predict": 10, "stream": True}
    frames: list[dict[str, Any]] = []
    with trio.fail_after(5):
        async with client.stream("POST", "/completion", json=body) as response:
            # Stop reading by cancelling a blocked read, so that the cancellation runs through
            # httpx's nested async generators and none is left half-read.
            with trio.CancelScope() as reading:
                async for line in response.aiter_lines():
                    frames.extend(frames_of([line]))
                    if len(frames) == 2 and not reading.cancel_called:
                        assert fake.busy_slots == 1
                        assert (await client.get("/slots")).json()[0]["is_processing"] is True
                        reading.cancel()  # the loop body must not await after this
        await fake.wait_until(lambda: fake.disconnects == 1 and fake.busy_slots == 0)
    assert [f["tokens_predicted"] for f in frames] == [1, 2]
    assert fake.completions_finished == 0
    assert (await client.get("/slots")).json()[0]["is_processing"] is False


async def test_non_streaming_disconnect_is_counted(
    client: httpx.AsyncClient, fake: FakeLlamaServer, nursery: trio.Nursery
) -> None:
    cancel = trio.CancelScope()

    async def run() -> None:
        with cancel:
            await client.post("/completion", json={"prompt": "[[hang:0]] x"})

    with trio.fail_after(5):
        nursery.start_soon(run)
        await fake.wait_until(lambda: fake.busy_slots == 1)
        cancel.cancel()
        await fake.wait_until(lambda: fake.disconnects == 1 and fake.busy_slots == 0)


# -- slots -------------------------------------------------------------------------------


async def test_a_request_waits_for_the_busy_slot_without_headers(
    client: httpx.AsyncClient, fake: FakeLlamaServer, nursery: trio.Nursery
) -> None:
    release = trio.Event()
    headers_seen = trio.Event()
    second_done = trio.Event()
    second: list[dict[str, Any]] = []

    async def first() -> None:
        body = {"prompt": "[[hang:1]] first", "stream": True}
        async with client.stream("POST", "/completion", json=body) as response:
            assert response.status_code == 200
            await release.wait()  # leaving closes the connection: the slot is freed

    async def waiting() -> None:
        body = {"prompt": "second", "n_predict": 3, "stream": True}
        async with client.stream("POST", "/completion", json=body) as response:
            headers_seen.set()
            second.extend(frames_of([line async for line in response.aiter_lines()]))
        second_done.set()

    with trio.fail_after(5):
        nursery.start_soon(first)
        await fake.wait_until(lambda: fake.busy_slots == 1)
        nursery.start_soon(waiting)
        await fake.wait_until(lambda: fake.deferred == 1)
        assert not headers_seen.is_set()
        metrics = (await client.get("/metrics")).text
        assert "llamacpp:requests_deferred 1" in metrics
        release.set()
        await second_done.wait()
    assert headers_seen.is_set() and fake.deferred == 0
    assert second[-1]["stop"] is True and second[-1]["tokens_predicted"] == 3
    assert fake.disconnects == 1 and fake.busy_slots == 0


async def test_waiters_are_served_fifo_and_raising_total_slots_admits_them(
    client: httpx.AsyncClient, fake: FakeLlamaServer, nursery: trio.Nursery
) -> None:
    started = {name: trio.Event() for name in "abcd"}
    leave_d = trio.CancelScope()

    async def hold(name: str, scope: trio.CancelScope) -> None:
        body = {"prompt": f"[[hang:0]] {name}", "stream": True}
        with scope:
            async with client.stream("POST", "/completion", json=body):
                started[name].set()
                await trio.sleep_forever()

    with trio.fail_after(5):
        nursery.start_soon(hold, "a", trio.CancelScope())
        await fake.wait_until(lambda: fake.busy_slots == 1)
        for name in "bcd":
            waiting = fake.deferred
            nursery.start_soon(hold, name, leave_d if name == "d" else trio.CancelScope())
            await fake.wait_until(lambda: fake.deferred > waiting)  # noqa: B023
        fake.total_slots = 3  # the two oldest waiters get the new slots at once
        assert fake.busy_slots == 3 and fake.deferred == 1
        await started["b"].wait()
        await started["c"].wait()
        assert not started["d"].is_set()
        assert [s["is_processing"] for s in (await client.get("/slots")).json()] == [True] * 3
        leave_d.cancel()  # a waiting client that leaves is dropped from the queue
        await fake.wait_until(lambda: fake.deferred == 0 and fake.disconnects == 1)
        assert fake.busy_slots == 3 and fake.completions_started == 3


# -- embeddings --------------------------------------------------------------------------

EMBED = "/v1/embeddings"


async def test_embeddings_are_501_unless_enabled(client: httpx.AsyncClient) -> None:
    for body in ({"input": "hello"}, {"input": []}):
        message = assert_error(await client.post(EMBED, json=body), 501, "not_supported_error")
        assert message == "This server does not support embeddings. Start it with `--embeddings`"
    assert_error(await client.post(EMBED, content=b"{nope"), 501, "not_supported_error")


async def test_embeddings_answer_in_openais_shape(
    client: httpx.AsyncClient, fake: FakeLlamaServer
) -> None:
    fake.embeddings = True
    one = (await client.post(EMBED, json={"input": "hello world"})).json()
    assert one["object"] == "list" and one["model"] == "models/fake.gguf"
    n = len(tokenize("hello world", add_special=True))
    assert one["usage"] == {"prompt_tokens": n, "total_tokens": n}
    [item] = one["data"]
    assert set(item) == {"embedding", "index", "object"}
    assert item["index"] == 0 and item["object"] == "embedding"
    vector = item["embedding"]
    assert len(vector) == EMBEDDING_DIM and vector == list(embedding("hello world"))
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-6)
    texts = ["b c", "hello world", "b c"]
    several = (await client.post(EMBED, json={"input": texts, "model": "mine"})).json()
    assert several["model"] == "mine"
    assert [d["index"] for d in several["data"]] == [0, 1, 2]
    assert [d["embedding"] for d in several["data"]] == [list(embedding(t)) for t in texts]
    total = sum(len(tokenize(t, add_special=True)) for t in texts)
    assert several["usage"]["prompt_tokens"] == total
    assert fake.embedding_bodies[-1] == {"input": texts, "model": "mine"}
    assert fake.embeddings_served == 2 and fake.completions_started == 0


async def test_embedding_vectors_are_closer_for_texts_sharing_words() -> None:
    def cosine(a: str, b: str) -> float:
        return sum(x * y for x, y in zip(embedding(a), embedding(b), strict=True))

    base = "the quick brown fox jumps"
    assert cosine(base, base) == pytest.approx(1.0)
    assert cosine(base, "the quick brown fox sleeps") > cosine(base, "alpha bravo charlie")


async def test_embeddings_in_base64_are_the_same_float32_values(
    client: httpx.AsyncClient, fake: FakeLlamaServer
) -> None:
    fake.embeddings = True
    body = {"input": ["x y", "z"], "encoding_format": "base64"}
    items = (await client.post(EMBED, json=body)).json()["data"]
    for item, text in zip(items, ["x y", "z"], strict=True):
        assert item["encoding_format"] == "base64"
        raw = base64.b64decode(item["embedding"])
        assert struct.unpack(f"<{EMBEDDING_DIM}f", raw) == embedding(text)
    floats = await client.post(EMBED, json={"input": "z", "encoding_format": "float"})
    assert floats.json()["data"][0]["embedding"] == list(embedding("z"))


async def test_embeddings_of_token_arrays(client: httpx.AsyncClient, fake: FakeLlamaServer) -> None:
    fake.embeddings = True
    ids = tokenize("hello world", add_special=True)
    one = (await client.post(EMBED, json={"input": ids})).json()
    assert len(one["data"]) == 1 and one["data"][0]["embedding"] == list(embedding("hello world"))
    two = (await client.post(EMBED, json={"input": [[5, 6], "a", [7]]})).json()
    assert len(two["data"]) == 3
    assert two["usage"]["prompt_tokens"] == 2 + len(tokenize("a", add_special=True)) + 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, '"input" or "content" must be provided'),
        ({"input": []}, '"input" must not be empty'),
        ({"input": ""}, "Input content cannot be empty"),
        ({"input": ["a", ""]}, "Input content cannot be empty"),
        ({"input": [[]]}, "Input content cannot be empty"),
        ({"input": 5}, '"prompt" elements must be a string, a list of tokens, a JSON object '
                       "containing a prompt string, or a list of mixed strings & tokens."),
        ({"input": None}, '"prompt" elements must be a string, a list of tokens, a JSON object '
                          "containing a prompt string, or a list of mixed strings & tokens."),
        ({"input": "a", "encoding_format": "bogus"},
         "The format to return the embeddings in. Can be either float or base64"),
        ({"input": "[[error-before:400]] a"}, "fake invalid request"),
    ],
)  # fmt: skip
async def test_embeddings_refusals_are_the_engines(
    client: httpx.AsyncClient, fake: FakeLlamaServer, body: dict[str, Any], message: str
) -> None:
    fake.embeddings = True
    assert (
        assert_error(await client.post(EMBED, json=body), 400, "invalid_request_error") == message
    )
    assert fake.busy_slots == 0 and fake.embeddings_served == 0


async def test_embeddings_want_the_api_key(
    client: httpx.AsyncClient, fake: FakeLlamaServer
) -> None:
    fake.embeddings, fake.api_key = True, "k1,k2"
    response = await client.post(EMBED, json={"input": "a"})
    assert_error(response, 401, "authentication_error")
    ok = await client.post(EMBED, json={"input": "a"}, headers={"Authorization": "Bearer k2"})
    assert ok.status_code == 200 and len(ok.json()["data"]) == 1
    fake.embeddings = False  # the key is checked first, as in the engine
    assert_error(await client.post(EMBED, json={"input": "a"}), 401, "authentication_error")


async def test_an_embedding_takes_a_slot_and_a_leaving_client_frees_it(
    client: httpx.AsyncClient, fake: FakeLlamaServer, nursery: trio.Nursery
) -> None:
    fake.embeddings = True
    hanging, answered = trio.CancelScope(), trio.Event()
    answers: list[int] = []

    async def post(text: str, scope: trio.CancelScope) -> None:
        with scope:
            answers.append((await client.post(EMBED, json={"input": [text]})).status_code)
            answered.set()

    with trio.fail_after(5):
        nursery.start_soon(post, "[[hang:0]] a", hanging)
        await fake.wait_until(lambda: fake.busy_slots == 1)
        assert (await client.get("/slots")).json()[0]["is_processing"] is True
        nursery.start_soon(post, "b", trio.CancelScope())
        await fake.wait_until(lambda: fake.deferred == 1)  # behind the busy slot
        hanging.cancel()
        await answered.wait()
    assert answers == [200] and fake.embeddings_served == 1 and fake.busy_slots == 0
    assert fake.disconnects == 1 and fake.completions_started == 0
