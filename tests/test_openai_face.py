"""The OpenAI face against the fake llama-server, driven by the official ``openai`` package.

``openai.AsyncOpenAI`` runs on httpx and anyio, so it works inside the test's own Trio run;
the synchronous ``openai.OpenAI`` runs in a worker thread (``trio.to_thread``) against the
same server.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from openai.lib.streaming.chat import ChatCompletionStreamState

from orchestra.events import EventLog
from orchestra.http import openai as openai_face
from orchestra.http.openai_answers import Answer
from orchestra.task import Endpoint

from .harness import Stack, open_stack

USER = [{"role": "user", "content": "Tell me about the sea"}]
HANG = [{"role": "user", "content": "[[hang:2]] hold the slot until cancelled"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


def sdk(stack: Stack, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=stack.running.urls[0] + "/v1", api_key=kwargs.pop("api_key", "none"), **kwargs
    )


@asynccontextmanager
async def openai_stack(**sections: Any) -> AsyncIterator[tuple[Stack, openai.AsyncOpenAI]]:
    async with open_stack(**sections) as stack:
        client = sdk(stack, max_retries=0)
        async with client:
            yield stack, client


async def v1_text(stack: Stack, task_id: str) -> str:
    events = await stack.stream(task_id)
    assert events[-1].event == "end", events[-1]
    return "".join(e.data["t"] for e in events if e.event == "token")


# -- answers ---------------------------------------------------------------------------------


async def test_chat_answer_carries_text_usage_and_the_task_id() -> None:
    async with openai_stack() as (stack, client):
        raw = await client.chat.completions.with_raw_response.create(
            model="default", messages=USER, max_tokens=6, seed=7
        )
        answer = raw.parse()
        task_id = raw.headers["x-task-id"]
        assert raw.headers["x-correlation-id"]
        assert answer.id == f"chatcmpl-{task_id}" and answer.object == "chat.completion"
        choice = answer.choices[0]
        assert choice.finish_reason == "length" and choice.message.role == "assistant"
        assert choice.message.content and len(choice.message.content.split()) == 6
        assert answer.usage is not None and answer.usage.completion_tokens == 6
        assert answer.usage.prompt_tokens > 0
        assert answer.usage.prompt_tokens_details is not None
        assert answer.usage.prompt_tokens_details.cached_tokens == 0
        status = (await stack.client.get(f"/v1/tasks/{task_id}")).json()
        assert status["state"] == "completed"
        # the same generation, read through the v1 face
        assert await v1_text(stack, task_id) == choice.message.content
        # a seed makes the task strict: the engine evaluates the whole prompt
        assert stack.fake.chat_bodies[-1]["cache_prompt"] is False
        assert stack.fake.chat_bodies[-1]["seed"] == 7


async def test_chat_stream_is_the_same_text_as_the_tasks_v1_stream() -> None:
    async with openai_stack() as (stack, client):
        raw = await client.chat.completions.with_raw_response.create(
            model="default",
            messages=USER,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        task_id = raw.headers["x-task-id"]
        async with raw.parse() as stream:
            chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finish[-1] == "length" and set(finish[:-1]) == {None}
        assert chunks[0].choices[0].delta.role == "assistant"
        usage = chunks[-1].usage
        assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens == 5
        assert {c.id for c in chunks} == {f"chatcmpl-{task_id}"}
        assert text == await v1_text(stack, task_id)
        # no seed: best effort, the engine's prompt cache on
        assert stack.fake.chat_bodies[-1]["cache_prompt"] is True


async def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_bytes() -> None:
    async with openai_stack() as (_, client):

        async def text(seed: int) -> str:
            answer = await client.chat.completions.create(
                model="default", messages=USER, max_tokens=12, seed=seed
            )
            return answer.choices[0].message.content or ""

        first = await text(1)
        assert await text(1) == first
        assert await text(2) != first


async def test_completions_stream_and_not_match_a_v1_task_with_the_same_seed() -> None:
    async with openai_stack() as (stack, client):
        prompt = "Once upon a time"
        whole = await client.completions.create(
            model="default", prompt=prompt, max_tokens=8, seed=3
        )
        assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
        async with await client.completions.create(
            model="default", prompt=prompt, max_tokens=8, seed=3, stream=True
        ) as streamed:
            pieces = [chunk.choices[0].text async for chunk in streamed]
        assert "".join(pieces) == whole.choices[0].text
        task = await stack.submit(prompt=prompt, max_tokens=8, seed=3)
        assert await v1_text(stack, task["task_id"]) == whole.choices[0].text


async def test_stop_strings_end_the_answer_with_finish_reason_stop() -> None:
    async with openai_stack() as (_, client):
        free = await client.chat.completions.create(
            model="default", messages=USER, max_tokens=10, seed=5
        )
        words = (free.choices[0].message.content or "").split()
        stop = words[3]
        stopped = await client.chat.completions.create(
            model="default", messages=USER, max_tokens=10, seed=5, stop=[stop, "zzz"]
        )
        assert stopped.choices[0].finish_reason == "stop"
        content = stopped.choices[0].message.content or ""
        assert stop not in content and content.split() == words[: words.index(stop)]
        single = await client.chat.completions.create(
            model="default", messages=USER, max_tokens=10, seed=5, stop=stop
        )
        assert single.choices[0].message.content == content


async def test_the_sync_client_in_a_thread(tmp_path: Path) -> None:
    model = tmp_path / "tiny-chat.gguf"
    model.write_bytes(b"GGUF")
    async with open_stack(model_path=str(model)) as stack:
        base = stack.running.urls[0] + "/v1"

        def use() -> tuple[str, str, list[str]]:
            with openai.OpenAI(base_url=base, api_key="none", max_retries=0) as client:
                chat = client.chat.completions.create(
                    model="default", messages=USER, max_tokens=4, seed=1
                )
                with client.completions.create(
                    model="default", prompt="hello", max_tokens=4, seed=1, stream=True
                ) as stream:
                    text = "".join(chunk.choices[0].text for chunk in stream)
                models = [m.id for m in client.models.list()]
                return chat.choices[0].message.content or "", text, models

        chat, text, models = await trio.to_thread.run_sync(use)
        assert len(chat.split()) == 4 and len(text.split()) == 4
        # the attached engine's model file was adopted into the catalog, under its name
        assert models == ["tiny-chat"]


async def test_an_attached_engines_model_is_listed_and_named(tmp_path: Path) -> None:
    model = tmp_path / "tiny-chat.gguf"
    model.write_bytes(b"GGUF")
    async with open_stack(model_path=str(model)) as stack:
        client = sdk(stack, max_retries=0)
        async with client:
            listed = [m async for m in client.models.list()]
            assert [(m.id, (m.model_extra or {})["loaded"]) for m in listed] == [
                ("tiny-chat", True)
            ]
            answer = await client.chat.completions.create(
                model="tiny-chat", messages=USER, max_tokens=2
            )
            assert answer.model == "tiny-chat"
            # the pool's name works too, and the answer names the model
            answer = await client.chat.completions.create(
                model="default", messages=USER, max_tokens=2
            )
            assert answer.model == "tiny-chat"
            with pytest.raises(openai.NotFoundError) as caught:
                await client.chat.completions.create(model="gpt-4o", messages=USER)
            error = caught.value.body
            assert isinstance(error, dict) and error["param"] == "model"
            assert "tiny-chat" in error["message"]


# -- tools and structured output -----------------------------------------------------------------


async def test_tool_call_deltas_assemble_into_the_calls_of_a_whole_answer() -> None:
    async with openai_stack() as (stack, client):
        messages = [{"role": "user", "content": "[[call:get_weather]] how is Oslo?"}]
        whole = await client.chat.completions.create(
            model="default", messages=messages, tools=[WEATHER], seed=9, max_tokens=64
        )
        assert whole.choices[0].finish_reason == "tool_calls"
        calls = whole.choices[0].message.tool_calls
        assert calls and calls[0].function.name == "get_weather"
        assert set(json.loads(calls[0].function.arguments)) == {"city", "days"}
        state = ChatCompletionStreamState()
        async with await client.chat.completions.create(
            model="default",
            messages=messages,
            tools=[WEATHER],
            seed=9,
            max_tokens=64,
            stream=True,
        ) as stream:
            async for chunk in stream:
                state.handle_chunk(chunk)
        assembled = state.get_final_completion().choices[0]
        assert assembled.finish_reason == "tool_calls"
        got = assembled.message.tool_calls
        assert got is not None and len(got) == 1
        assert got[0].function.name == calls[0].function.name
        assert got[0].function.arguments == calls[0].function.arguments
        assert stack.fake.chat_bodies[-1]["tools"] == [WEATHER]
        # the call and its result go back as history, the call as the SDK parsed it
        await client.chat.completions.create(
            model="default",
            messages=[
                *messages,
                whole.choices[0].message.model_dump(),
                {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp": 3}'},
            ],
            tools=[WEATHER],
            max_tokens=4,
        )
        history = stack.fake.chat_bodies[-1]["messages"]
        assert [m["role"] for m in history] == ["user", "assistant", "tool"]
        assert history[1]["tool_calls"][0]["id"] == calls[0].id
        assert history[2]["tool_call_id"] == calls[0].id


async def test_response_format_reaches_the_engine_as_a_json_schema() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    async with openai_stack() as (stack, client):
        await client.chat.completions.create(
            model="default",
            messages=USER,
            max_tokens=3,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        )
        sent = stack.fake.chat_bodies[-1]["response_format"]
        assert sent == {"type": "json_schema", "json_schema": {"schema": schema}}
        await client.completions.create(
            model="default",
            prompt="hi",
            max_tokens=3,
            extra_body={"priority": "batch"},
        )
        await client.chat.completions.create(
            model="default", messages=USER, max_tokens=3, response_format={"type": "json_object"}
        )
        sent = stack.fake.chat_bodies[-1]["response_format"]
        assert sent["json_schema"]["schema"] == {"type": "object"}


# -- orchestra's fields, errors and load ---------------------------------------------------------


async def test_orchestras_own_fields_ride_in_extra_body() -> None:
    async with openai_stack() as (stack, client):
        raw = await client.chat.completions.with_raw_response.create(
            model="default",
            messages=USER,
            max_tokens=3,
            extra_body={"task_id": "my-chat-1", "priority": "batch", "determinism": "strict"},
        )
        assert raw.headers["x-task-id"] == "my-chat-1"
        view = (await stack.client.get("/v1/tasks/my-chat-1")).json()
        assert view["state"] == "completed"
        assert stack.fake.chat_bodies[-1]["cache_prompt"] is False
        # the same task id with another request is a conflict, in OpenAI's shape
        with pytest.raises(openai.ConflictError) as caught:
            await client.chat.completions.create(
                model="default", messages=USER, max_tokens=4, extra_body={"task_id": "my-chat-1"}
            )
        assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "CONFLICT"


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"messages": USER, "n": 2}, "n", "only 1"),
        ({"messages": USER, "logprobs": True}, "logprobs", "not supported"),
        ({"messages": USER, "audio": {"voice": "x"}}, "audio", "not supported"),
        ({"messages": USER, "temperature": 9}, "temperature", "must be in"),
        ({"messages": USER, "wat": 1}, "wat", "unknown field"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
            "image_url",
        ),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "must be one"),
        ({"messages": []}, "messages", "non-empty"),
        ({}, "messages", "required"),
        ({"messages": USER, "tool_choice": {"type": "function"}}, "tool_choice", "not supported"),
        ({"messages": USER, "stream_options": {"include_usage": True}}, "stream_options", "stream"),
    ],
)
async def test_what_is_not_supported_is_a_400_naming_the_field(
    body: dict[str, Any], param: str, fragment: str
) -> None:
    async with open_stack() as stack:
        answer = await stack.client.post("/v1/chat/completions", json={"model": "m", **body})
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "INVALID_PARAMS"
        assert error["param"] == param and fragment in error["message"]
        assert answer.headers["x-should-retry"] == "false"
        assert stack.running.actors.queue.statistics().tasks_known == 0


async def test_the_sdk_raises_bad_request_for_a_refused_field() -> None:
    async with openai_stack() as (_, client):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="default", messages=USER, n=3)
        assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "n"


async def test_a_full_queue_is_a_429_the_sdk_retries_after_the_advised_wait() -> None:
    config = {"adapter": {"engine_backlog": 0}, "admission": {"queue_capacity": 1}}
    async with open_stack(**config) as stack:
        holder = await stack.submit(prompt="[[hang:1]] hold", max_tokens=8)
        waiter = await stack.submit(prompt="wait", max_tokens=2)
        seen: list[tuple[float, httpx.Response]] = []

        async def on_response(response: httpx.Response) -> None:
            seen.append((time.monotonic(), response))
            if response.status_code == 429:
                # room comes back while the SDK waits: the blocker is cancelled
                await stack.client.post(f"/v1/tasks/{holder['task_id']}/cancel")

        http = httpx.AsyncClient(event_hooks={"response": [on_response]})
        client = sdk(stack, max_retries=2, http_client=http)
        async with client:
            answer = await client.chat.completions.create(
                model="default", messages=USER, max_tokens=2
            )
        assert answer.choices[0].message.content
        statuses = [r.status_code for _, r in seen]
        assert statuses == [429, 200]
        refused = seen[0][1]
        assert refused.headers["x-should-retry"] == "true"
        advised_ms = int(refused.headers["retry-after-ms"])
        assert int(refused.headers["retry-after"]) == max(1, -(-advised_ms // 1000))
        body = json.loads(await refused.aread())
        assert body["error"]["code"] == "ADMISSION_REJECT"
        assert body["error"]["type"] == "rate_limit_error"
        # the SDK waited what it was told before it asked again
        assert seen[1][0] - seen[0][0] >= advised_ms / 1000 * 0.9
        assert (await stack.client.get(f"/v1/tasks/{waiter['task_id']}")).status_code == 200


async def test_an_unready_pool_is_a_503_with_retry_after() -> None:
    async with openai_stack() as (stack, client):
        stack.fake.set_loading(True)
        queue = stack.running.actors.queue
        with trio.fail_after(10):
            await queue.wait_ready(False)
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="default", messages=USER)
        assert caught.value.status_code == 503
        headers = caught.value.response.headers
        assert int(headers["retry-after"]) >= 1 and int(headers["retry-after-ms"]) >= 1
        assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "POOL_UNREADY"


async def test_401_and_403_are_openai_errors() -> None:
    async with open_stack(auth={"token": "s3cret-token", "optional": False}) as stack:
        body = {"model": "default", "messages": USER}
        missing = await stack.client.post("/v1/chat/completions", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"]
        error = missing.json()["error"]
        assert error["code"] == "UNAUTHORIZED" and error["type"] == "authentication_error"
        async with sdk(stack, api_key="wrong", max_retries=0) as stranger:
            with pytest.raises(openai.PermissionDeniedError) as wrong:
                await stranger.completions.create(model="default", prompt="x")
        assert isinstance(wrong.value.body, dict) and wrong.value.body["code"] == "FORBIDDEN"
        async with sdk(stack, api_key="s3cret-token", max_retries=0) as owner:
            answer = await owner.chat.completions.create(
                model="default", messages=USER, max_tokens=2
            )
        assert answer.choices[0].message.content


# -- cancel and disconnect -----------------------------------------------------------------------


async def test_a_v1_cancel_ends_the_openai_stream_with_a_cancelled_error() -> None:
    async with openai_stack() as (stack, client):
        raw = await client.chat.completions.with_raw_response.create(
            model="default", messages=HANG, stream=True, max_tokens=50
        )
        task_id = raw.headers["x-task-id"]
        contents: list[str] = []

        async def read() -> None:
            async for chunk in raw.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    contents.append(chunk.choices[0].delta.content)
                    if len(contents) == 2:
                        await stack.client.post(f"/v1/tasks/{task_id}/cancel")

        with pytest.raises(openai.APIError) as caught:
            await read()
        assert len(contents) == 2  # nothing after the cancel
        assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "CANCELLED"
        assert (await stack.client.get(f"/v1/tasks/{task_id}")).json()["state"] == "cancelled"


@pytest.mark.parametrize("streamed", [True, False])
async def test_a_client_that_leaves_cancels_its_task_and_frees_the_slot(streamed: bool) -> None:
    async with open_stack() as stack:
        body = {"model": "default", "messages": HANG, "max_tokens": 50, "stream": streamed}
        queue = stack.running.actors.queue
        async with trio.open_nursery() as nursery:
            asked = trio.Event()
            task_ids: list[str] = []

            async def ask() -> None:
                async with stack.client.stream("POST", "/v1/chat/completions", json=body) as r:
                    task_ids.append(r.headers["x-task-id"]) if streamed else None
                    asked.set()
                    await r.aread()

            nursery.start_soon(ask)
            with trio.fail_after(10):
                await stack.fake.wait_until(lambda: stack.fake.busy_slots == 1)
                if streamed:
                    await asked.wait()
            nursery.cancel_scope.cancel()  # the client goes away
        with trio.fail_after(10):
            await stack.fake.wait_until(lambda: stack.fake.busy_slots == 0)
        stats = queue.statistics()
        assert stats.slots_busy == 0 and stats.ended.get("cancelled") == 1
        # the slot is free for the next one
        answer = await stack.client.post(
            "/v1/chat/completions", json={"model": "default", "messages": USER, "max_tokens": 2}
        )
        assert answer.status_code == 200


async def test_metrics_and_logs_label_the_face(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orchestra.queue")
    async with openai_stack() as (stack, client):
        await client.chat.completions.create(model="default", messages=USER, max_tokens=2)
        await stack.submit(prompt="x", max_tokens=2)
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="default", messages=[])
        metrics = (await stack.client.get("/metrics")).text
        assert 'orchestra_tasks_admitted_total{face="openai",model="default"} 1.0' in metrics
        assert 'orchestra_tasks_admitted_total{face="v1",model="default"} 1.0' in metrics
        # A body refused before it names a model has an empty model label.
        assert 'face="openai",model="",reason="INVALID_PARAMS"} 1.0' in metrics
        ended = [r for r in caplog.records if getattr(r, "outcome", None) == "completed"]
        assert sorted(getattr(r, "face", None) for r in ended) == ["openai", "v1"]


async def test_a_cancelled_whole_answer_is_a_409_naming_its_task() -> None:
    async with openai_stack() as (stack, client):
        caught: list[openai.APIStatusError] = []

        async def ask() -> None:
            with pytest.raises(openai.APIStatusError) as refused:
                await client.chat.completions.create(
                    model="default", messages=HANG, max_tokens=20, extra_body={"task_id": "w1"}
                )
            caught.append(refused.value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            with trio.fail_after(10):
                await stack.fake.wait_until(lambda: stack.fake.busy_slots == 1)
            await stack.client.post("/v1/tasks/w1/cancel")
        (error,) = caught
        assert error.status_code == 409 and error.response.headers["x-task-id"] == "w1"
        assert isinstance(error.body, dict) and error.body["code"] == "CANCELLED"


@pytest.mark.filterwarnings("ignore:Async generator 'orchestra.http.openai:ResourceWarning")
async def test_a_stream_dropped_before_its_body_was_read_cancels_its_task() -> None:
    """A client gone in the instant between the handler's answer and Quart reading its
    body: the body is never iterated, only dropped; its task is cancelled all the same
    (Trio finalizes the started body, whose ``finally`` cancels the task)."""
    log = EventLog(limit=8)
    cancelled: list[str] = []
    done = trio.Event()

    async def cancel(task_id: str) -> None:
        cancelled.append(task_id)
        done.set()

    reply = Answer(Endpoint.CHAT, "t-dropped", "m", 0)
    response = await openai_face._stream(reply, log.subscribe(), cancel)
    assert log.subscribers == 1  # started: it counts as the task's reader
    del response
    gc.collect()
    with trio.fail_after(5):
        await done.wait()
    assert cancelled == ["t-dropped"] and log.subscribers == 0
