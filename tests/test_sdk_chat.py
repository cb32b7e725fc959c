"""The SDK's ``chat()`` and ``stream_chat()`` (the OpenAI face), async, sync and embedded,
against the fake llama-server, and exactly (``httpx.MockTransport``) where a server cannot
produce the case. Tasks that must keep the slot busy use the fake's ``[[hang:N]]`` (N
tokens, then nothing until the client goes away), so nothing depends on timing."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from orchestra.sdk import (
    AsyncClient,
    BudgetExceeded,
    ChatCompletion,
    ChatDelta,
    ChatMessage,
    ChatRequest,
    Client,
    ErrorCode,
    ParseError,
    QueueFull,
    Retry,
    ServerError,
    SyncChatStream,
    TaskFailed,
    TaskState,
    TransportError,
)

from .engine import free_port, require_engine
from .harness import Stack, make_config, open_stack

USER = [{"role": "user", "content": "Tell me about the sea"}]
HANG = [{"role": "user", "content": "[[hang:2]] hold the slot until cancelled"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def v1_text(stack: Stack, task_id: str) -> str:
    events = await stack.stream(task_id)
    return "".join(e.data["t"] for e in events if e.event == "token")


async def state_of(stack: Stack, task_id: str) -> str:
    state: str = (await stack.client.get(f"/v1/tasks/{task_id}")).json()["state"]
    return state


async def slot_freed_and_cancelled(stack: Stack, task_id: str) -> None:
    with trio.fail_after(10):
        await stack.fake.wait_until(lambda: stack.fake.busy_slots == 0)
    assert await stack.wait_state(task_id, "cancelled")
    assert await state_of(stack, task_id) == "cancelled"


# -- the requests and answers, against a live server ------------------------------------------


async def test_chat_and_stream_chat_give_the_tasks_text_usage_and_ids() -> None:
    async with open_stack() as stack, AsyncClient(stack.running.urls[0]) as client:
        whole = await client.chat(USER, max_tokens=6, seed=7)
        assert isinstance(whole, ChatCompletion)
        assert whole.finish_reason == "length" and len(whole.text.split()) == 6
        assert whole.content == whole.text and whole.tool_calls == ()
        assert whole.id == f"chatcmpl-{whole.task_id}" and whole.model == "default"
        assert whole.usage.completion_tokens == 6 and whole.usage.prompt_tokens > 0
        assert whole.usage.total_tokens == whole.usage.prompt_tokens + 6
        assert whole.usage.cached_tokens == 0 and whole.correlation_id
        assert await state_of(stack, whole.task_id) == "completed"
        assert await v1_text(stack, whole.task_id) == whole.text
        sent = stack.fake.chat_bodies[-1]
        assert sent["seed"] == 7 and sent["cache_prompt"] is False  # a seed: strict

        stream = client.stream_chat(USER, max_tokens=6, seed=7)
        with pytest.raises(RuntimeError):
            stream.task_id  # noqa: B018  (not opened yet)
        async with stream:
            assert await state_of(stack, stream.task_id) in ("queued", "running", "completed")
            deltas = [delta async for delta in stream]
        assert all(isinstance(d, ChatDelta) for d in deltas)
        *pieces, last = deltas
        assert [d.last for d in deltas] == [False] * len(pieces) + [True]
        assert "".join(d.content for d in pieces) == whole.text  # same seed, same bytes
        assert last.finish_reason == "length" and last.usage == whole.usage
        assert last.content == "" and stream.done
        answer = stream.completion()
        assert answer.text == whole.text and answer.task_id == stream.task_id
        assert answer.correlation_id == stream.correlation_id != whole.correlation_id
        assert await v1_text(stack, stream.task_id) == whole.text


async def test_the_conversation_goes_back_with_orchestras_fields() -> None:
    async with open_stack() as stack, AsyncClient(stack.running.urls[0]) as client:
        messages: list[Any] = [
            ChatMessage("system", "Be brief."),
            {"role": "user", "content": "hello"},
        ]
        first = await client.chat(messages, max_tokens=3)
        assert stack.fake.chat_bodies[-1]["cache_prompt"] is True  # no seed: best effort
        messages += [first.message, ChatMessage("user", "and then?")]
        second = await client.chat(
            messages,
            model="default",
            max_tokens=4,
            temperature=0.5,
            top_p=0.9,
            stop=["zzz"],
            priority="batch",
            determinism="strict",
            task_id="chat-fields-1",
            deadline_ms=60_000,
        )
        assert second.task_id == "chat-fields-1" and second.finish_reason == "length"
        sent = stack.fake.chat_bodies[-1]
        assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
        assert sent["messages"][2]["content"] == first.text
        assert sent["temperature"] == 0.5 and sent["top_p"] == 0.9
        assert "zzz" in sent["stop"] and sent["cache_prompt"] is False
        view = (await stack.client.get("/v1/tasks/chat-fields-1")).json()
        assert view["state"] == "completed"
        # a typo in a parameter is the caller's error, raised before anything is sent
        with pytest.raises(TypeError):
            client.stream_chat(USER, max_token=3)
        with pytest.raises(ValueError, match="urgent"):
            ChatRequest(messages=USER, priority="urgent")  # type: ignore[arg-type]


async def test_tool_call_pieces_assemble_into_the_calls_of_a_whole_answer() -> None:
    messages = [{"role": "user", "content": "[[call:get_weather]] how is Oslo?"}]
    async with open_stack() as stack, AsyncClient(stack.running.urls[0]) as client:
        async with client.stream_chat(
            messages, tools=[WEATHER], tool_choice="auto", seed=9, max_tokens=64
        ) as stream:
            deltas = [delta async for delta in stream]
        streamed = stream.completion()
        whole = await client.chat(messages, tools=[WEATHER], seed=9, max_tokens=64)
        assert stack.fake.chat_bodies[-1]["tools"] == [WEATHER]
        for answer in (streamed, whole):
            assert answer.finish_reason == "tool_calls"
            [call] = answer.tool_calls
            assert call.type == "function" and call.function.name == "get_weather"
            assert call.id and "city" in json.loads(call.function.arguments)
        assert streamed.tool_calls[0].function == whole.tool_calls[0].function
        pieces = [p for d in deltas for p in d.tool_calls]
        assert pieces[0].id == streamed.tool_calls[0].id and pieces[0].name == "get_weather"
        assert "".join(p.arguments for p in pieces) == streamed.tool_calls[0].function.arguments
        # the call goes back as history, with its result
        call = whole.tool_calls[0]
        await client.chat(
            [
                *messages,
                whole.message,
                ChatMessage("tool", '{"temp": 3}', tool_call_id=call.id),
            ],
            tools=[WEATHER],
            max_tokens=2,
        )
        history = stack.fake.chat_bodies[-1]["messages"]
        assert [m["role"] for m in history] == ["user", "assistant", "tool"]
        assert history[1]["tool_calls"][0]["id"] == call.id
        assert history[1]["tool_calls"][0]["function"]["name"] == "get_weather"


# -- errors ------------------------------------------------------------------------------------


async def test_refusals_are_the_sdks_typed_errors() -> None:
    config = {"adapter": {"engine_backlog": 0}, "admission": {"queue_capacity": 1}}
    async with open_stack(**config) as stack, AsyncClient(stack.running.urls[0]) as client:
        with pytest.raises(ServerError) as invalid:
            await client.chat(USER, temperature=9, top_p=7)
        error = invalid.value
        assert type(error) is ServerError and error.status == 400
        assert error.code is ErrorCode.INVALID_PARAMS and not error.retriable
        assert error.param == "temperature" and "top_p" in error.message
        assert error.correlation_id
        await client.chat(USER, max_tokens=2, task_id="chat-once")
        with pytest.raises(ServerError) as conflict:  # the same task id, another request
            async with client.stream_chat(USER, max_tokens=3, task_id="chat-once"):
                pass
        assert conflict.value.code is ErrorCode.CONFLICT and conflict.value.status == 409
        # a full queue: QueueFull with the advised wait
        holder = await stack.submit(prompt="[[hang:1]] hold", max_tokens=8)
        waiter = await stack.submit(prompt="wait", max_tokens=2)
        with pytest.raises(QueueFull) as full:
            await client.chat(USER, max_tokens=2)
        assert full.value.code is ErrorCode.ADMISSION_REJECT and full.value.retriable
        assert full.value.status == 429 and (full.value.retry_after_ms or 0) > 0
        for task in (holder, waiter):
            await stack.client.post(f"/v1/tasks/{task['task_id']}/cancel")
    async with open_stack(auth={"token": "s3cret", "optional": False}) as stack:
        async with AsyncClient(stack.running.urls[0], token="") as stranger:
            with pytest.raises(ServerError) as unauthorized:
                await stranger.chat(USER)
        assert (unauthorized.value.code, unauthorized.value.status) == (
            ErrorCode.UNAUTHORIZED,
            401,
        )
        async with AsyncClient(stack.running.urls[0], token="s3cret") as owner:
            assert (await owner.chat(USER, max_tokens=2)).text


async def test_a_cancel_on_the_server_ends_the_stream_with_task_failed() -> None:
    async with open_stack() as stack, AsyncClient(stack.running.urls[0]) as client:
        got: list[str] = []
        stream = client.stream_chat(HANG, max_tokens=50)

        async def read() -> None:
            async with stream:
                async for delta in stream:
                    got.append(delta.content)
                    if len(got) == 2:  # the fake now holds the slot, sending nothing
                        assert (await client.cancel(stream.task_id)).state is TaskState.CANCELLED

        with pytest.raises(TaskFailed) as caught:
            await read()
        failed = caught.value
        assert failed.code is ErrorCode.CANCELLED and failed.status is None
        assert failed.task_id == stream.task_id and failed.text == "".join(got)
        assert failed.text.strip() and not stream.done
        with pytest.raises(TaskFailed):
            stream.completion()
        # chat() raises the same
        async with trio.open_nursery() as nursery:

            async def cancel_when_running() -> None:
                await stack.fake.wait_until(lambda: stack.fake.busy_slots == 1)
                await client.cancel("chat-cancelled")

            nursery.start_soon(cancel_when_running)
            with pytest.raises(TaskFailed) as whole:
                await client.chat(HANG, task_id="chat-cancelled")
        assert whole.value.code is ErrorCode.CANCELLED and whole.value.task_id == "chat-cancelled"


# -- leaving early cancels the task ----------------------------------------------------------------


async def test_leaving_a_stream_early_closes_it_and_the_server_cancels_the_task() -> None:
    async with open_stack() as stack, AsyncClient(stack.running.urls[0]) as client:
        # leaving the block
        async with client.stream_chat(HANG, max_tokens=50) as stream:
            async for _ in stream:
                break
            assert stack.fake.busy_slots == 1
        await slot_freed_and_cancelled(stack, stream.task_id)
        # without a block: contextlib.aclosing
        async with contextlib.aclosing(client.stream_chat(HANG, max_tokens=50)) as bare:
            async for _ in bare:
                break
        await slot_freed_and_cancelled(stack, bare.task_id)
        # a Trio cancel of chat()
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(client.chat, HANG, task_id="chat-abandoned"))
                await stack.fake.wait_until(lambda: stack.fake.busy_slots == 1)
                scope.cancel()
        await slot_freed_and_cancelled(stack, "chat-abandoned")
        # the slot serves the next chat
        assert (await client.chat(USER, max_tokens=2)).text


# -- the sync face and embedded mode -------------------------------------------------------------


async def test_the_sync_client_chats_streams_and_closes() -> None:
    async with open_stack() as stack:
        url = stack.running.urls[0]

        def use() -> tuple[Any, ...]:
            with Client(url) as client:
                whole = client.chat(USER, max_tokens=4, seed=1)
                with client.stream_chat(USER, max_tokens=4, seed=1) as stream:
                    assert isinstance(stream, SyncChatStream)
                    task_id = stream.task_id
                    texts = [delta.content for delta in stream]
                streamed = stream.completion()
                with client.stream_chat(HANG, max_tokens=50) as hanging:
                    for _ in hanging:
                        break
                deadline = time.monotonic() + 10  # cancelled while this client still lives
                while client.status(hanging.task_id).state is not TaskState.CANCELLED:
                    assert time.monotonic() < deadline, "leaving the block did not cancel"
                    time.sleep(0.01)
                with pytest.raises(ServerError) as caught:
                    client.chat(USER, extra_body={"n": 2})
                return whole, task_id, texts, streamed, hanging.task_id, caught.value

        whole, task_id, texts, streamed, hung, refused = await trio.to_thread.run_sync(use)
        assert len(whole.text.split()) == 4 and "".join(texts) == whole.text
        assert streamed.task_id == task_id and streamed.text == whole.text
        assert await v1_text(stack, task_id) == whole.text
        await slot_freed_and_cancelled(stack, hung)
        assert refused.code is ErrorCode.INVALID_PARAMS and refused.param == "n"


_INTERRUPTED_SCRIPT = """
import sys, time
from orchestra.sdk import Client
messages = [{"role": "user", "content": "[[hang:2]] hold the slot"}]
with Client(sys.argv[1]) as client:
    try:
        with client.stream_chat(messages, max_tokens=50, task_id="sync-ctrl-c") as stream:
            for delta in stream:
                pass
    except KeyboardInterrupt:  # the stream is closed now: the server cancels the task
        deadline = time.monotonic() + 10
        while client.status("sync-ctrl-c").state != "cancelled":
            if time.monotonic() > deadline:
                sys.exit(1)
            time.sleep(0.01)
        sys.exit(130)  # while this process (and its connections) still lives
"""


async def test_ctrl_c_in_a_sync_stream_closes_it_and_the_server_cancels_the_task() -> None:
    async with open_stack() as stack:
        command = [sys.executable, "-c", _INTERRUPTED_SCRIPT, stack.running.urls[0]]
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(trio.run_process, command, capture_stdout=True, check=False)
            )
            with trio.fail_after(30):
                await stack.fake.wait_until(lambda: stack.fake.busy_slots == 1)
                log = stack.running.actors.queue.log_of("sync-ctrl-c")
                assert log is not None
                while log.tokens < 2:  # both tokens sent: the script is waiting for more
                    await log.wait_beyond(len(log))
            process.send_signal(signal.SIGINT)
        assert process.returncode == 130  # interrupted, and cancelled before it exited
        await slot_freed_and_cancelled(stack, "sync-ctrl-c")


async def test_the_sync_client_raises_transport_errors_in_the_caller() -> None:
    def use() -> None:
        with Client(f"http://127.0.0.1:{free_port()}") as client, client.stream_chat(USER):
            pass

    with pytest.raises(TransportError) as caught:
        await trio.to_thread.run_sync(use)
    assert not caught.value.request_sent


async def test_embedded_mode_chats_and_a_closed_stream_cancels_its_task() -> None:
    async with open_stack() as stack:
        config = make_config(stack.config.adapter.endpoint)
        async with AsyncClient.embedded(config) as client:
            whole = await client.chat(USER, max_tokens=3, seed=2)
            assert whole.finish_reason == "length" and len(whole.text.split()) == 3
            async with client.stream_chat(HANG, max_tokens=50) as stream:
                async for _ in stream:
                    break
            with trio.fail_after(10):
                await stack.fake.wait_until(lambda: stack.fake.busy_slots == 0)
            # the embedded service's queue is not the stack's: ask it
            assert (await client.status(stream.task_id)).state is TaskState.CANCELLED
            with pytest.raises(ServerError) as caught:
                await client.chat([])
            assert caught.value.status == 400 and caught.value.param == "messages"


# -- exact cases (MockTransport) -----------------------------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {"id": "chatcmpl-t", "object": "chat.completion.chunk", "model": "m",
            "choices": [choice], **extra}  # fmt: skip


_USAGE = {
    "prompt_tokens": 3,
    "completion_tokens": 2,
    "total_tokens": 5,
    "prompt_tokens_details": {"cached_tokens": 1},
}


def _sse(*frames: dict[str, Any] | str) -> bytes:
    return b"".join(
        b"data: " + (f if isinstance(f, str) else json.dumps(f)).encode() + b"\n\n" for f in frames
    )


def _streamed(body: bytes, task_id: str = "t") -> httpx.Response:
    headers = {"content-type": "text/event-stream", "X-Task-Id": task_id}
    return httpx.Response(200, headers=headers, content=body)


def _openai_error(status: int, code: str, **extra: Any) -> httpx.Response:
    error = {"message": f"{code} here", "type": "x", "param": None, "code": code,
             "retriable": status in (429, 503), "correlation_id": "corr-1", **extra}  # fmt: skip
    return httpx.Response(status, json={"error": error})


def _mock(*answers: httpx.Response) -> tuple[AsyncClient, list[httpx.Request]]:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answers[len(sent) - 1]

    return AsyncClient("http://mock", transport=httpx.MockTransport(handler)), sent


async def test_the_chunks_of_a_stream_become_typed_pieces() -> None:
    body = _sse(
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        _chunk({"content": "lo"}),
        _chunk({}, "stop"),
        {**_chunk({}), "choices": [], "usage": _USAGE},
        "[DONE]",
    )
    client, sent = _mock(_streamed(body, "t-1"))
    answer = await client.chat([ChatMessage("user", "hi")], seed=1, stop="x")
    assert (answer.text, answer.finish_reason, answer.task_id) == ("Hello", "stop", "t-1")
    assert answer.usage.cached_tokens == 1 and answer.usage.total_tokens == 5
    wire = json.loads(sent[0].content)
    assert wire == {
        "messages": [{"role": "user", "content": "hi"}],
        "model": "default",
        "seed": 1,
        "stop": "x",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize(
    ("body", "error", "match"),
    [
        (_sse(_chunk({"content": "a"})), TransportError, "ended before its last chunk"),
        (_sse(_chunk({"content": "a"}), "[DONE]"), ParseError, "before finish_reason"),
        (_sse("not json"), ParseError, "not JSON"),
        (_sse({"choices": "nope"}), ParseError, "not the contract's shape"),
        (
            _sse(_chunk({"content": "a"}), {"error": {"code": "WORKER_RESET", "message": "m"}}),
            TaskFailed,
            "WORKER_RESET",
        ),
    ],
)
async def test_a_stream_outside_the_contract_or_failed_raises(
    body: bytes, error: type[Exception], match: str
) -> None:
    client, _ = _mock(_streamed(body))
    with pytest.raises(error, match=match):
        await client.chat(USER)


@pytest.mark.parametrize(
    ("answer", "check"),
    [
        (
            _openai_error(429, "BUDGET_EXCEEDED", policy_label="tokens"),
            lambda e: type(e) is BudgetExceeded and e.policy_label == "tokens",
        ),
        (
            httpx.Response(
                429,
                headers={"retry-after-ms": "1500", "Retry-After": "2"},
                json=_openai_error(429, "ADMISSION_REJECT").json(),
            ),
            lambda e: type(e) is QueueFull and e.retry_after_ms == 1500,
        ),
        (
            _openai_error(503, "POOL_UNREADY", retry_after_ms=700),
            lambda e: type(e) is ServerError and e.retry_after_ms == 700 and e.retriable,
        ),
        (  # orchestra's own envelope (not the OpenAI face's): read as the v1 API reads it
            httpx.Response(409, json={"code": "CONFLICT", "message": "m", "retriable": False}),
            lambda e: type(e) is ServerError and e.code is ErrorCode.CONFLICT,
        ),
        (
            httpx.Response(502, text="<html>bad gateway</html>"),
            lambda e: type(e) is ParseError and e.status == 502,
        ),
        (
            httpx.Response(200, json={"not": "a stream"}),
            lambda e: type(e) is ParseError and "not a chat stream" in str(e),
        ),
    ],
)
async def test_error_answers_map_to_the_sdks_errors(
    answer: httpx.Response, check: Callable[[Exception], bool]
) -> None:
    client, _ = _mock(answer)
    with pytest.raises((ServerError, ParseError)) as caught:
        await client.chat(USER)
    assert check(caught.value), caught.value


async def test_retry_sends_the_chat_again_with_the_same_task_id() -> None:
    done = _sse(_chunk({"content": "x"}, "stop"), {**_chunk({}), "choices": [], "usage": _USAGE},
                "[DONE]")  # fmt: skip
    full = httpx.Response(
        429, headers={"retry-after-ms": "10"}, json=_openai_error(429, "ADMISSION_REJECT").json()
    )
    client, sent = _mock(full, _streamed(done))
    client.retry = Retry(attempts=2)
    assert (await client.chat(USER)).text == "x"
    ids = [json.loads(request.content)["task_id"] for request in sent]
    assert len(ids) == 2 and ids[0] == ids[1]


@pytest.mark.slow
async def test_embedded_chat_on_the_real_engine_gives_the_same_bytes_for_a_seed() -> None:
    require_engine()
    config = make_config(
        f"http://127.0.0.1:{free_port()}",
        replica={"parallel": 2, "threads": 2, "ctx_size": 2048},
        shutdown_grace_s=0.0,
    )
    messages = [ChatMessage("user", "Name three colours.")]
    with trio.fail_after(120):
        async with AsyncClient.embedded(config) as client:
            first = await client.chat(messages, max_tokens=12, seed=5)
            async with client.stream_chat(messages, max_tokens=12, seed=5) as stream:
                pieces = [delta.content async for delta in stream]
            assert first.text and first.text == "".join(pieces) == stream.completion().text
            assert first.usage.completion_tokens == stream.completion().usage.completion_tokens
            assert first.finish_reason in ("stop", "length")
