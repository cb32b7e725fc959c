"""The fake llama-server's OpenAI-compatible face over real HTTP: ``/apply-template`` and
``/v1/chat/completions`` (shapes, streaming, stop strings, usage, tool calls, slots, keys)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from orchestra.testing.fake_llama import WORDS, FakeLlamaServer, tokenize

CHAT = "/v1/chat/completions"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me a story."},
]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {}}}


def chunks_of(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON chunks of an OpenAI stream, which must end with ``data: [DONE]``."""
    data = [line.removeprefix("data: ") for line in lines if line]
    assert all(line.startswith("data: ") for line in lines if line), lines
    assert data[-1] == "[DONE]", data[-1]
    return [json.loads(item) for item in data[:-1]]


async def stream_chunks(client: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    """POST a streaming chat completion and return its chunks (without ``[DONE]``)."""
    body = {"messages": MESSAGES, **body, "stream": True}
    async with client.stream("POST", CHAT, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        return chunks_of([line async for line in response.aiter_lines()])


async def chat(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """POST a non-streamed chat completion and return its object."""
    response = await client.post(CHAT, json={"messages": MESSAGES, **body})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    answer: dict[str, Any] = response.json()
    return answer


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def assert_envelope(obj: dict[str, Any], kind: str) -> None:
    assert obj["object"] == kind
    assert obj["id"].startswith("chatcmpl-") and len(obj["id"]) == len("chatcmpl-") + 32
    assert obj["model"] == "models/fake.gguf" and obj["system_fingerprint"] == "b0-unknown"
    assert isinstance(obj["created"], int)


# -- /apply-template -----------------------------------------------------------------------


async def test_apply_template_renders_chatml(client: httpx.AsyncClient) -> None:
    response = await client.post("/apply-template", json={"messages": MESSAGES})
    assert response.status_code == 200
    assert response.json() == {
        "prompt": "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n"
    }
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]
    prefill = [*parts, {"role": "assistant", "content": "Sure"}]
    rendered = (await client.post("/apply-template", json={"messages": prefill})).json()
    assert rendered["prompt"] == "<|im_start|>user\na\nb<|im_end|>\n<|im_start|>assistant\nSure"
    with_tools = await client.post("/apply-template", json={"messages": parts, "tools": [CLOCK]})
    assert with_tools.json()["prompt"].startswith(
        '<|im_start|>tools\n[{"type":"function","function":{"name":"get_time","parameters":{}}}]<|im_end|>\n'
    )


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, "'messages' is required"),
        ({"messages": "hi"}, 400, "Expected 'messages' to be an array"),
        (
            {"messages": [{"role": "user"}]},
            400,
            "All non-assistant messages must contain 'content'",
        ),
        ({"messages": MESSAGES, "tool_choice": "always"}, 400, "Invalid tool_choice: always"),
        (
            {"messages": MESSAGES, "response_format": {"type": "xml"}},
            400,
            'response_format type must be one of "text" or "json_object", but got: xml',
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            500,
            "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj",
        ),
    ],
)
async def test_bad_chat_bodies(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, message: str
) -> None:
    for path in ("/apply-template", CHAT):
        response = await client.post(path, json=body)
        assert response.status_code == status
        error = response.json()["error"]
        assert error["code"] == status and error["message"] == message
        assert error["type"] == ("invalid_request_error" if status == 400 else "server_error")


# -- chat completions ----------------------------------------------------------------------


async def test_non_streamed_chat(client: httpx.AsyncClient, fake: FakeLlamaServer) -> None:
    answer = await chat(client, max_tokens=5, seed=3)
    assert_envelope(answer, "chat.completion")
    [choice] = answer["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length"
    assert choice["message"]["role"] == "assistant"
    words = choice["message"]["content"].split()
    assert len(words) == 5 and all(word in WORDS for word in words)
    prompt = (await client.post("/apply-template", json={"messages": MESSAGES})).json()["prompt"]
    n_prompt = len(tokenize(prompt, add_special=True))
    assert answer["usage"] == {
        "completion_tokens": 5,
        "prompt_tokens": n_prompt,
        "total_tokens": 5 + n_prompt,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert answer["timings"]["predicted_n"] == 5 and answer["timings"]["prompt_n"] == n_prompt
    assert fake.chat_bodies[-1]["seed"] == 3
    assert fake.completions_started == fake.completions_finished == 1 and fake.busy_slots == 0
    other = await client.post(
        "/chat/completions", json={"messages": MESSAGES, "max_tokens": 5, "seed": 3}
    )
    assert other.json()["choices"][0]["message"]["content"] == choice["message"]["content"]
    assert other.json()["id"] != answer["id"]


async def test_streamed_chat(client: httpx.AsyncClient) -> None:
    chunks = await stream_chunks(client, max_tokens=4, seed=9)
    for chunk in chunks:
        assert_envelope(chunk, "chat.completion.chunk")
    assert len({c["id"] for c in chunks}) == 1
    first, *deltas, last = chunks
    assert first["choices"] == [
        {"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}
    ]
    assert len(deltas) == 4
    assert all(c["choices"][0]["finish_reason"] is None and "timings" not in c for c in deltas)
    assert last["choices"] == [{"finish_reason": "length", "index": 0, "delta": {}}]
    assert last["timings"]["predicted_n"] == 4 and "usage" not in last
    whole = await chat(client, max_tokens=4, seed=9)
    assert content_of(chunks) == whole["choices"][0]["message"]["content"]


async def test_the_same_seed_gives_the_same_text(client: httpx.AsyncClient) -> None:
    async def text(**body: Any) -> str:
        content: str = (await chat(client, max_tokens=10, **body))["choices"][0]["message"][
            "content"
        ]
        return content

    first = await text(seed=1)
    assert first == await text(seed=1) == await text(seed=1, temperature=0.2)
    assert first != await text(seed=2)
    assert content_of(await stream_chunks(client, max_tokens=10, seed=1)) == first


async def test_apply_template_then_completion_gives_the_chat_words(
    client: httpx.AsyncClient,
) -> None:
    messages = [
        *MESSAGES,
        {"role": "assistant", "content": "Once"},
        {"role": "user", "content": "More."},
    ]
    prompt = (await client.post("/apply-template", json={"messages": messages})).json()["prompt"]
    native = await client.post("/completion", json={"prompt": prompt, "seed": 42, "n_predict": 8})
    answer = await chat(client, messages=messages, seed=42, max_completion_tokens=8)
    content = answer["choices"][0]["message"]["content"]
    assert content == native.json()["content"] and len(content.split()) == 8


async def test_include_usage_adds_a_usage_chunk(client: httpx.AsyncClient) -> None:
    chunks = await stream_chunks(client, max_tokens=3, stream_options={"include_usage": True})
    *_, finish, usage = chunks
    assert finish["choices"][0]["finish_reason"] == "length" and "timings" not in finish
    assert usage["choices"] == [] and usage["object"] == "chat.completion.chunk"
    assert usage["usage"]["completion_tokens"] == 3
    assert usage["usage"]["total_tokens"] == 3 + usage["usage"]["prompt_tokens"]
    assert usage["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert usage["timings"]["predicted_n"] == 3
    # the same prompt again: its prefix comes from the slot's cache
    again = (await stream_chunks(client, max_tokens=3, stream_options={"include_usage": True}))[-1]
    cached = again["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == again["usage"]["prompt_tokens"] - 1 == again["timings"]["cache_n"]


@pytest.mark.parametrize("as_list", [False, True])
async def test_stop_strings_cut_the_answer(client: httpx.AsyncClient, as_list: bool) -> None:
    full = (await chat(client, max_tokens=12, seed=5))["choices"][0]["message"]["content"]
    stop = " " + full.split()[3]
    expected = full[: full.index(stop)]
    body = {"max_tokens": 12, "seed": 5, "stop": [stop, "never-generated"] if as_list else stop}
    answer = await chat(client, **body)
    assert answer["choices"][0]["message"]["content"] == expected
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] == len(expected.split()) + 1
    chunks = await stream_chunks(client, **body)
    assert content_of(chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_length_finish(client: httpx.AsyncClient) -> None:
    answer = await chat(client, max_completion_tokens=2)
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 2
    assert (await chat(client))["usage"]["completion_tokens"] == 16  # the default


# -- tool calls ----------------------------------------------------------------------------


async def test_tool_calls_streamed_and_not(client: httpx.AsyncClient) -> None:
    messages = [{"role": "user", "content": "Weather in Paris? [[call:get_weather]]"}]
    body = {"messages": messages, "tools": [CLOCK, WEATHER], "seed": 4}
    answer = await chat(client, **body)
    [choice] = answer["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["role"] == "assistant" and message["content"] == ""
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert len(call["id"]) == 32 and call["id"].isalnum()
    arguments = json.loads(call["function"]["arguments"])
    assert set(arguments) == {"city", "days"}
    assert arguments["city"] in WORDS and isinstance(arguments["days"], int)

    chunks = await stream_chunks(client, **body)
    first, header, *pieces, finish = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": None}
    [head] = header["choices"][0]["delta"]["tool_calls"]
    assert head["index"] == 0 and head["type"] == "function" and len(head["id"]) == 32
    assert head["function"] == {"name": "get_weather"}
    assert len(pieces) > 1
    streamed = ""
    for chunk in pieces:
        [delta] = chunk["choices"][0]["delta"]["tool_calls"]
        assert delta["index"] == 0 and set(delta) == {"index", "function"}
        streamed += delta["function"]["arguments"]
    assert streamed == call["function"]["arguments"]
    assert finish["choices"] == [{"finish_reason": "tool_calls", "index": 0, "delta": {}}]
    assert finish["timings"]["predicted_n"] == 1 + len(pieces)


async def test_when_there_is_no_tool_call(client: httpx.AsyncClient) -> None:
    directive = [{"role": "user", "content": "[[call:get_weather]]"}]
    for body in (
        {"messages": directive},  # no tools offered
        {"messages": directive, "tools": [CLOCK]},  # not that tool
        {"messages": directive, "tools": [WEATHER], "tool_choice": "none"},
        {
            "messages": [
                *directive,
                {"role": "assistant", "content": "x"},
                {"role": "user", "content": "y"},
            ],
            "tools": [WEATHER],
        },
    ):
        answer = await chat(client, **body)
        assert answer["choices"][0]["finish_reason"] == "length"
        assert "tool_calls" not in answer["choices"][0]["message"]
    required = await chat(client, tools=[CLOCK, WEATHER], tool_choice="required")
    [call] = required["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": "get_time", "arguments": "{}"}


# -- slots, faults and keys ----------------------------------------------------------------


async def test_disconnect_mid_stream_frees_the_slot(
    client: httpx.AsyncClient, fake: FakeLlamaServer
) -> None:
    messages = [{"role": "user", "content": "[[hang:2]] go"}]
    body = {"messages": messages, "max_tokens": 10, "stream": True}
    contents: list[str] = []
    with trio.fail_after(5):
        async with client.stream("POST", CHAT, json=body) as response:
            with trio.CancelScope() as reading:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        contents.append(line)
                    if len(contents) == 3 and not reading.cancel_called:
                        assert fake.busy_slots == 1
                        reading.cancel()  # the loop body must not await after this
        await fake.wait_until(lambda: fake.disconnects == 1 and fake.busy_slots == 0)
    assert fake.completions_finished == 0
    assert (await client.get("/slots")).json()[0]["is_processing"] is False
    assert (await chat(client, max_tokens=1))["usage"]["completion_tokens"] == 1


async def test_fault_directives(client: httpx.AsyncClient, fake: FakeLlamaServer) -> None:
    before = await client.post(
        CHAT,
        json={"messages": [{"role": "user", "content": "[[error-before:503]]"}], "stream": True},
    )
    assert before.status_code == 503 and before.json()["error"]["type"] == "unavailable_error"
    mid = [{"role": "user", "content": "[[error-mid:2]] x"}]
    async with client.stream("POST", CHAT, json={"messages": mid, "stream": True}) as response:
        lines = [line async for line in response.aiter_lines() if line]
    assert len(lines) == 4 and "[DONE]" not in lines[-1]
    assert json.loads(lines[-1].removeprefix("data: ")) == {
        "error": {"code": 500, "message": "Context size has been exceeded.", "type": "server_error"}
    }
    assert (await client.post(CHAT, json={"messages": mid})).status_code == 500
    assert fake.busy_slots == 0


async def test_api_key(client: httpx.AsyncClient, fake: FakeLlamaServer) -> None:
    fake.api_key = "k1,k2"
    body = {"messages": MESSAGES, "max_tokens": 1}
    for response in (
        await client.post(CHAT, json=body),
        await client.post(CHAT, json=body, headers={"Authorization": "Bearer nope"}),
        await client.post("/apply-template", json=body),
        await client.post("/completion", json={"prompt": "x"}),
    ):
        assert response.status_code == 401
        assert response.json() == {
            "error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}
        }
    assert fake.chat_bodies == []
    assert (await client.get("/health")).status_code == 200
    ok = await client.post(CHAT, json=body, headers={"Authorization": "Bearer k2"})
    assert ok.status_code == 200
    assert (await client.post(CHAT, json=body, headers={"X-Api-Key": "k1"})).status_code == 200
