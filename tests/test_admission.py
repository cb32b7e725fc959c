"""Admission: every bad field named, context measured only when it may not fit."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra.actors.admission import Admission, OnePool, fingerprint, parse_task_request
from orchestra.actors.queue import Admitted
from orchestra.config import AdmissionConfig
from orchestra.errors import EngineError, ErrorCode, Refusal
from orchestra.http.openai_requests import parse_chat
from orchestra.task import Determinism, Face, Priority, TaskRequest

LIMITS = AdmissionConfig(queue_capacity=4, ctx_limit=512, max_tokens_limit=128)


def parse(body: Any) -> TaskRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_task_request(raw, LIMITS)


def problems(body: Any) -> list[str]:
    with pytest.raises(Refusal) as caught:
        parse(body)
    assert caught.value.code is ErrorCode.INVALID_PARAMS
    return list(caught.value.problems) or [caught.value.message]


def test_minimal_request_gets_defaults() -> None:
    request = parse({"prompt": "hi"})
    assert request.prompt == "hi"
    assert request.max_tokens == 128  # min(256, max_tokens_limit)
    assert request.priority is Priority.INTERACTIVE
    assert request.determinism is Determinism.STRICT


def test_full_request_round_trips_to_engine_params() -> None:
    request = parse(
        {
            "prompt": "p",
            "max_tokens": 8,
            "seed": 7,
            "temperature": 0,
            "top_p": 0.9,
            "top_k": 40,
            "min_p": 0.05,
            "repeat_penalty": 1.1,
            "stop": ["\n"],
            "priority": "batch",
            "determinism": "best_effort",
            "task_id": "job-1",
        }
    )
    assert request.engine_params() == {
        "prompt": "p",
        "n_predict": 8,
        "cache_prompt": True,
        "seed": 7,
        "temperature": 0.0,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "repeat_penalty": 1.1,
        "stop": ["\n"],
    }


def test_strict_determinism_turns_the_prompt_cache_off() -> None:
    assert parse({"prompt": "p"}).engine_params()["cache_prompt"] is False


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "body: not valid JSON"),
        (b"[1, 2]", "body: must be a JSON object"),
        (b"\xff\xfe", "body: not valid JSON"),
        ({}, "prompt: required"),
        ({"prompt": ""}, "prompt: must not be empty"),
        ({"prompt": 3}, "prompt: must be a string"),
        ({"prompt": "p", "max_tokens": 0}, "max_tokens: must be between 1 and 128"),
        ({"prompt": "p", "max_tokens": 129}, "max_tokens: must be between 1 and 128"),
        ({"prompt": "p", "max_tokens": "5"}, "max_tokens: must be an integer"),
        ({"prompt": "p", "max_tokens": True}, "max_tokens: must be an integer"),
        ({"prompt": "p", "max_tokens": 2.5}, "max_tokens: must be an integer"),
        ({"prompt": "p", "temperature": -1}, "temperature: must be in [0.0, 10.0]"),
        ({"prompt": "p", "top_p": 0}, "top_p: must be in (0.0, 1.0]"),
        ({"prompt": "p", "seed": -1}, "seed: must be between 0 and 4294967295"),
        ({"prompt": "p", "stop": "x"}, "stop: must be a list of non-empty strings"),
        ({"prompt": "p", "stop": ["a"] * 17}, "stop: must hold at most 16 strings"),
        ({"prompt": "p", "priority": "urgent"}, "priority: must be one of interactive, batch"),
        ({"prompt": "p", "engine": "vllm"}, "engine: must be one of llamacpp"),
        ({"prompt": "p", "task_id": "a b"}, "task_id: may hold only letters"),
        ({"prompt": "p", "ctx": 513}, "ctx: must be between 1 and 512"),
        ({"prompt": "p", "metrics": "true"}, "metrics: must be true or false"),
        ({"prompt": "p", "metrics": 1}, "metrics: must be true or false"),
        ({"prompt": "p", "bogus": 1}, "bogus: unknown field"),
    ],
)
def test_each_bad_field_is_named(body: Any, expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(body)), problems(body)


def test_every_problem_is_reported_at_once() -> None:
    found = problems({"max_tokens": -1, "seed": "x", "extra": 1, "other": 2})
    fields = sorted(p.split(":")[0] for p in found)
    assert fields == ["extra", "max_tokens", "other", "prompt", "seed"]


@given(st.dictionaries(st.text(min_size=1, max_size=10), st.integers(), max_size=5))
def test_unknown_fields_are_always_refused(extra: dict[str, int]) -> None:
    known = {field.name for field in attrs.fields(TaskRequest)}
    unknown = {k for k in extra if k not in known}
    body: dict[str, Any] = {"prompt": "p", **{k: extra[k] for k in unknown}}
    if not unknown:
        assert parse(body).prompt == "p"
        return
    found = problems(body)
    for key in unknown:
        assert f"{key}: unknown field" in found


def test_metrics_is_asked_for_with_true() -> None:
    assert parse({"prompt": "p", "metrics": True}).metrics is True
    assert parse({"prompt": "p", "metrics": False}).metrics is False
    assert parse({"prompt": "p", "metrics": None}).metrics is False
    assert parse({"prompt": "p"}).metrics is False
    assert (
        parse({"prompt": "p", "metrics": True}).engine_params()
        == parse({"prompt": "p"}).engine_params()
    )


def test_fingerprint_ignores_task_id_only() -> None:
    a = parse({"prompt": "p", "task_id": "a"})
    b = parse({"prompt": "p", "task_id": "b"})
    c = parse({"prompt": "q", "task_id": "a"})
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


class CountingEngine:
    def __init__(self, tokens: int | None) -> None:
        self.tokens = tokens
        self.calls = 0
        self.rendered: list[Any] = []

    async def render_chat(self, params: Any) -> str:
        self.rendered.append(params)
        return "<rendered chat>"

    async def count_tokens(self, text: str) -> int:
        self.calls += 1
        if self.tokens is None:
            raise EngineError(ErrorCode.WORKER_RESET, "down", True, True)
        return self.tokens


class AcceptAll:
    async def submit(self, request: TaskRequest, fingerprint: str) -> Admitted:
        return Admitted("t", 0, 0)


async def test_short_prompts_are_not_sent_to_tokenize() -> None:
    engine = CountingEngine(tokens=10)
    admission = Admission(LIMITS, OnePool(engine, AcceptAll()))
    await admission.admit(b'{"prompt": "hello", "max_tokens": 100}')
    assert engine.calls == 0


async def test_long_prompts_are_measured_by_the_engine() -> None:
    engine = CountingEngine(tokens=400)
    admission = Admission(LIMITS, OnePool(engine, AcceptAll()))
    body = json.dumps({"prompt": "word " * 100, "max_tokens": 100}).encode()
    await admission.admit(body)  # 400 + 100 <= 512
    assert engine.calls == 1
    engine.tokens = 450
    with pytest.raises(Refusal) as caught:
        await admission.admit(body)
    assert caught.value.code is ErrorCode.CTX_LIMIT_EXCEEDED
    assert "450 tokens" in caught.value.message
    assert admission.statistics().rejected == {("v1", "CTX_LIMIT_EXCEEDED", "default"): 1}
    assert admission.statistics().admitted == {("v1", "default"): 1}


async def test_an_unreachable_engine_during_measuring_is_retriable() -> None:
    admission = Admission(LIMITS, OnePool(CountingEngine(tokens=None), AcceptAll()))
    with pytest.raises(Refusal) as caught:
        await admission.admit(json.dumps({"prompt": "w " * 500, "max_tokens": 10}).encode())
    assert caught.value.code is ErrorCode.POOL_UNREADY
    assert caught.value.retriable


class Recording(AcceptAll):
    def __init__(self) -> None:
        self.requests: list[TaskRequest] = []

    async def submit(self, request: TaskRequest, fingerprint: str) -> Admitted:
        self.requests.append(request)
        return Admitted("t", 0, 0)


def openai_chat(body: dict[str, Any]) -> Any:
    """What the OpenAI face hands Admission for a chat body."""
    return lambda: parse_chat(body, LIMITS)


async def test_a_long_chat_is_rendered_by_the_engine_then_measured() -> None:
    engine, queue = CountingEngine(tokens=300), Recording()
    admission = Admission(LIMITS, OnePool(engine, queue))
    messages = [{"role": "user", "content": "word " * 100}]
    body = {"model": "m", "messages": messages, "max_tokens": 100}
    await admission.admit_with(openai_chat(body), Face.OPENAI)
    assert engine.calls == 1 and engine.rendered[0]["messages"] == messages
    engine.tokens = 450
    with pytest.raises(Refusal) as caught:
        await admission.admit_with(openai_chat(body), Face.OPENAI)
    assert caught.value.code is ErrorCode.CTX_LIMIT_EXCEEDED
    assert admission.statistics().rejected == {("openai", "CTX_LIMIT_EXCEEDED", "default"): 1}
    assert admission.statistics().admitted == {("openai", "default"): 1}


async def test_without_max_tokens_a_chat_gets_what_fits_the_context() -> None:
    engine, queue = CountingEngine(tokens=450), Recording()
    admission = Admission(LIMITS, OnePool(engine, queue))
    body = {"model": "m", "messages": [{"role": "user", "content": "word " * 100}]}
    parsed, _, _ = await admission.admit_with(openai_chat(body), Face.OPENAI)
    assert queue.requests[0].max_tokens == parsed.task.max_tokens == 512 - 450
    short = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    await admission.admit_with(openai_chat(short), Face.OPENAI)
    assert queue.requests[1].max_tokens == LIMITS.max_tokens_limit  # fits: not measured
    assert engine.calls == 1
