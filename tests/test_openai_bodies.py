"""Property: whatever body an OpenAI client sends, the OpenAI face answers it as documented.

A body hypothesis builds from a valid request by breaking one thing (a field set to any
JSON value, a field too many or missing, a message made wrong, not an object at all, not
JSON) is answered, on the live server in front of the fake engine, with a 200 when it is
still valid, else a 400 in OpenAI's error shape naming the field, never a 5xx; and a
refused body queues nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from .test_openapi import Live, fake_server

CHAT = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMPLETION = {"model": "default", "prompt": "hi", "max_tokens": 2}
CHAT_FIELDS = [
    *("model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p"),
    *("seed", "stop", "presence_penalty", "frequency_penalty", "logit_bias", "user"),
    *("response_format", "tools", "tool_choice", "parallel_tool_calls", "stream"),
    *("stream_options", "n", "logprobs", "priority", "determinism", "top_k", "min_p"),
    *("repeat_penalty", "audio", "modalities"),
]
"""The fields a broken body sets (not ``task_id``, ``session_id`` or ``deadline_ms``: a good
value of those is refused for what it asks, with a 409, 429 or 504, which is right)."""
MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id", "refusal", "x")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["auto", "none", "required", "user", "text", "json_schema", "function"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def broken_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """A request to one of the two endpoints, with one thing broken."""
    path, base = draw(
        st.sampled_from([("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
    )
    body: Any = json.loads(json.dumps(base))
    how = draw(st.sampled_from(["set", "add", "drop", "message", "not-object", "not-json"]))
    if how == "set":
        body[draw(st.sampled_from(CHAT_FIELDS))] = draw(json_values)
    elif how == "add":
        body[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    elif how == "drop":
        del body[draw(st.sampled_from(sorted(body)))]
    elif how == "message" and "messages" in body:
        body["messages"][0][draw(st.sampled_from(MESSAGE_FIELDS))] = draw(json_values)
    elif how == "not-object":
        body = draw(st.lists(json_values, max_size=2) | st.text(max_size=5) | st.integers())
    if how == "not-json":
        return path, draw(st.binary(max_size=20)).replace(b"{", b"")
    return path, json.dumps(body).encode()


class Server:
    """The live server, with a short repr (hypothesis prints its arguments)."""

    def __init__(self, live: Live) -> None:
        self.live = live

    def __repr__(self) -> str:
        return f"Server({self.live.base_url})"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with fake_server(tmp_path_factory.mktemp("openai-bodies")) as live:
        yield Server(live)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=broken_bodies())
def test_a_broken_body_is_a_400_in_openais_shape_and_queues_nothing(
    server: Server, request: tuple[str, bytes]
) -> None:
    live, (path, body) = server.live, request
    before = live.actors.queue.statistics().tasks_known
    answer = live.request("POST", path, data=body, headers={"Content-Type": "application/json"})
    assert answer.status_code < 500, answer.text
    if answer.status_code == 200:
        return  # what broke was still a valid request
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["code"] == "INVALID_PARAMS"
    if error["param"] is not None:  # it names a field of the body, or a required one
        sent = json.loads(body) if body.startswith(b"{") else {}
        param = error["param"]
        named = {*sent, "model", "messages", "prompt"}
        assert any(param == k or param.startswith((f"{k}[", f"{k}.")) for k in named), param
    assert live.actors.queue.statistics().tasks_known == before
    assert answer.headers["x-should-retry"] == "false"


def test_the_property_runs_against_the_documented_routes(tmp_path: Path) -> None:
    """The two routes the property fuzzes are the OpenAI face's (a renamed route would
    otherwise turn every case into a 404 the property does not look at)."""
    with fake_server(tmp_path) as server:
        for path, body in (("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)):
            assert server.request("POST", path, json=body).status_code == 200
