"""The OpenAI face end to end: the official ``openai`` package against orchestra owning the
real llama-server (``--jinja``, the small model's own chat template).

Tool calls are tested against the fake engine only (tests/test_openai_face.py): the small
model's template has no tool-call format, so llama-server answers it with text even under
``tool_choice: "required"``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jsonschema_rs
import openai
import pytest
import trio

from .engine import Owned, open_owned
from .test_engine_e2e import wait_slot_idle

MODEL = "SmolLM2-135M-Instruct.Q4_1"
ASK = [{"role": "user", "content": "Write a short poem about the sea."}]
COUNT = [{"role": "user", "content": "Count from 1 to 200, separated by commas."}]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@asynccontextmanager
async def owned_openai(**sections: Any) -> AsyncIterator[tuple[Owned, openai.AsyncOpenAI]]:
    async with open_owned(**sections) as owned:
        client = openai.AsyncOpenAI(
            base_url=owned.running.urls[0] + "/v1", api_key="none", max_retries=0
        )
        async with client:
            yield owned, client


async def content(client: openai.AsyncOpenAI, **params: Any) -> str:
    answer = await client.chat.completions.create(model=MODEL, **params)
    return answer.choices[0].message.content or ""


async def test_chat_models_and_seeds_on_the_real_engine() -> None:
    async with owned_openai() as (owned, client):
        models = [m async for m in client.models.list()]
        served = [m for m in models if m.id == MODEL]
        assert served and (served[0].model_extra or {}).get("loaded") is True

        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=ASK, max_tokens=24, seed=42, temperature=0.9
        )
        answer = raw.parse()
        text = answer.choices[0].message.content or ""
        assert text.strip() and answer.choices[0].finish_reason in ("stop", "length")
        assert answer.usage is not None and answer.usage.prompt_tokens > 10
        # the same seed: byte-identical, and the same bytes on the task's v1 stream
        assert await content(client, messages=ASK, max_tokens=24, seed=42, temperature=0.9) == text
        events = await owned.stream(raw.headers["x-task-id"])
        assert "".join(e.data["t"] for e in events if e.event == "token") == text
        # streamed, with the same seed: the same bytes again
        async with await client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=24, seed=42, temperature=0.9, stream=True
        ) as stream:
            streamed = "".join(
                [c.choices[0].delta.content or "" async for c in stream if c.choices]
            )
        assert streamed == text

        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=ASK)
        assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "model"


async def test_completions_match_a_v1_task_with_the_same_seed() -> None:
    async with owned_openai() as (owned, client):
        prompt = "The three primary colours are"
        answer = await client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=16, seed=7, temperature=0.8
        )
        text = answer.choices[0].text
        assert text and answer.usage is not None and answer.usage.completion_tokens <= 16
        assert await owned.text(prompt=prompt, max_tokens=16, seed=7, temperature=0.8) == text


async def test_stop_strings_and_json_schema_on_the_real_engine() -> None:
    async with owned_openai() as (_, client):
        stopped = await client.chat.completions.create(
            model=MODEL, messages=COUNT, max_tokens=64, temperature=0, stop=["7"]
        )
        assert stopped.choices[0].finish_reason == "stop"
        assert "7" not in (stopped.choices[0].message.content or "")

        shaped = await content(
            client,
            messages=[{"role": "user", "content": "Invent a person: a name and an age."}],
            max_tokens=64,
            temperature=0,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": PERSON},
            },
        )
        person = json.loads(shaped)
        jsonschema_rs.validate(PERSON, person)


async def logged_tokens(owned: Owned, task_id: str) -> list[str]:
    """The text of every ``token`` event in a finished task's log (its v1 stream)."""
    tokens: list[str] = []
    async with owned.client.stream("GET", f"/v1/tasks/{task_id}/stream") as response:
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "token":
                tokens.append(json.loads(line[6:])["t"])
    return tokens


async def test_cancel_and_disconnect_free_the_engine_slot() -> None:
    async with owned_openai() as (owned, client):
        # a v1 cancel: the OpenAI stream ends with a CANCELLED error chunk, nothing after it
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=COUNT, max_tokens=400, temperature=0, stream=True
        )
        task_id = raw.headers["x-task-id"]
        pieces: list[str] = []

        async def read() -> None:
            async for chunk in raw.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                    if len(pieces) == 3:
                        await owned.client.post(f"/v1/tasks/{task_id}/cancel")

        with pytest.raises(openai.APIError) as caught:
            await read()
        assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "CANCELLED"
        # Exactly what the task's log held when the cancel closed it, nothing after: a token
        # the engine sent while the cancel was on its way counts, one after it cannot.
        assert len(pieces) >= 3
        assert pieces == await logged_tokens(owned, task_id)
        with trio.fail_after(10):
            await wait_slot_idle(owned)

        # a client that goes away mid-stream: its task is cancelled and the slot freed
        body = {"model": MODEL, "messages": COUNT, "max_tokens": 400, "stream": True}
        async with (
            httpx.AsyncClient(base_url=owned.running.urls[0], timeout=30) as http,
            http.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            left = response.headers["x-task-id"]
            seen = 0
            async for chunk in response.aiter_raw():
                seen += chunk.count(b'"content":"')
                if seen >= 3:
                    break
            # the connection is closed here, mid-stream
        with trio.fail_after(10):
            await owned.wait_state(left, "cancelled")
            await wait_slot_idle(owned)
        assert (await owned.client.get(f"/v1/tasks/{left}")).json()["state"] == "cancelled"
        # and the next chat gets the slot
        assert await content(client, messages=ASK, max_tokens=4, temperature=0)


async def test_a_full_queue_and_auth_with_the_sync_client_on_the_real_engine() -> None:
    """The synchronous client (in a worker thread): a 429 that it waits out as advised, then
    succeeds once the queue has room; 401 and 403 as on the v1 API."""
    token = "e2e-openai-token"
    sections = {
        "admission": {"queue_capacity": 1},
        "adapter": {"engine_backlog": 0},
        "auth": {"token": token, "optional": False},
    }
    async with open_owned(**sections) as owned:
        base = owned.running.urls[0]
        key = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=key, timeout=30) as v1:
            long = {"prompt": "Count from 1 to 1000: 1, 2,", "max_tokens": 1000}
            holder = (await v1.post("/v1/tasks", json=long)).json()["task_id"]
            await owned.wait_state(holder, "running")
            queued = await v1.post("/v1/tasks", json={"prompt": "Hi", "max_tokens": 4})
            assert queued.status_code == 202
            seen: list[int] = []

            def on_response(response: Any) -> None:
                seen.append(response.status_code)
                if response.status_code == 429:  # room comes back while the SDK waits
                    trio.from_thread.run(v1.post, f"/v1/tasks/{holder}/cancel")

            def use() -> tuple[str, int]:
                http = openai.DefaultHttpxClient(event_hooks={"response": [on_response]})
                with openai.OpenAI(base_url=base + "/v1", api_key=token, http_client=http) as ok:
                    answer = ok.chat.completions.create(
                        model=MODEL, messages=ASK, max_tokens=4, temperature=0
                    )
                stranger = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
                with stranger, pytest.raises(openai.PermissionDeniedError) as refused:
                    stranger.models.list()
                return answer.choices[0].message.content or "", refused.value.status_code

            text, forbidden = await trio.to_thread.run_sync(use)
            async with httpx.AsyncClient(base_url=base) as nobody:
                missing = await nobody.post(
                    "/v1/chat/completions", json={"model": MODEL, "messages": ASK}
                )
        assert text and seen == [429, 200] and forbidden == 403
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "UNAUTHORIZED"
