"""Consumer Pacts: what the SDK (``orchestra.sdk.AsyncClient``) expects of the server, as
Pact interactions (``pact-python``, Pact specification V4) run against Pact's mock server
and written to ``specs/pacts/orchestra-sdk-orchestra.json``.

Each interaction of :data:`CASES` is a request the SDK sends and the answer it relies on,
with matchers (types, regular expressions) where the live server's values vary; ``exercise``
drives the real SDK call against the mock server and checks what the SDK made of the
answer. The provider side, ``tests/test_pacts_provider.py``, replays the file against a
live orchestra. The checked-in file must equal what these tests generate: run them with
``PACT_UPDATE=1`` to rewrite it (see ``specs/pacts/README.md``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import pytest
from pact import Pact, match

from orchestra.sdk import (
    AsyncClient,
    End,
    ErrorCode,
    QueueFull,
    ServerError,
    Started,
    TaskRequest,
    TaskState,
    Token,
)

os.environ.setdefault("PACT_DO_NOT_TRACK", "true")  # no usage statistics sent by Pact's FFI

CONSUMER = "orchestra-sdk"
PROVIDER = "orchestra"
PACT_DIR = Path(__file__).resolve().parent.parent / "specs" / "pacts"
PACT_FILE = PACT_DIR / f"{CONSUMER}-{PROVIDER}.json"
UPDATE_ENV = "PACT_UPDATE"
"""Set to ``1`` to write the generated pact over the checked-in one."""

JSON = "application/json"
INT = r"^[0-9]+$"
RFC3339 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$"
SHA256_ID = r"^sha256:[0-9a-f]{64}$"

DONE_TASK = "fx-done"
RUNNING_TASK = "fx-running"
NEW_TASK = "fx-new"
PLAN = "1. read\n2. write"
SUMMARY = "The SDK reads what the server writes."


def artifact_id(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# -- what an interaction is -----------------------------------------------------------------


@attrs.frozen
class Case:
    """One interaction: the request the SDK sends, the answer it relies on, and the SDK
    call that sends it (which checks what the SDK made of the answer)."""

    description: str
    method: str
    path: str
    status: int
    exercise: Callable[[AsyncClient], Awaitable[None]]
    body: Any = None
    """The answer's body (with matchers); a ``str`` is sent as ``content_type``."""
    content_type: str = JSON
    state: str | None = None
    params: Mapping[str, Any] = attrs.field(factory=dict)
    request_body: Any = None
    request_headers: Mapping[str, str] = attrs.field(factory=dict)
    query: Mapping[str, str] = attrs.field(factory=dict)
    headers: Mapping[str, Any] = attrs.field(factory=dict)
    """Answer headers besides ``Content-Type`` (values may be matchers)."""
    body_regex: str | None = None
    """For a text body: a regular expression the whole body must match (the body is the
    example). A matcher object given as a text body would be sent as its JSON."""
    nullable: tuple[str, ...] = ()
    """JSON paths of the answer's body that may also be ``null`` (a field the SDK reads
    as ``X | None``): the example at that path is a value, and the rule is ``type OR
    null``. (Pact's integration JSON cannot say this; its matching rules can.)"""

    def add_to(self, pact: Pact) -> None:
        interaction = pact.upon_receiving(self.description)
        if self.state is not None:
            interaction.given(self.state, parameters=dict(self.params) or None)
        interaction.with_request(self.method, self.path)
        for name, value in self.request_headers.items():
            interaction.with_header(name, value)
        for name, value in self.query.items():
            interaction.with_query_parameter(name, value)
        if self.request_body is not None:
            interaction.with_body(self.request_body, JSON)
        interaction.will_respond_with(self.status)
        interaction.with_header("Content-Type", self.content_type)
        for name, value in self.headers.items():
            interaction.with_header(name, value)
        interaction.with_body(self.body, self.content_type)
        rules: dict[str, Any] = {
            path: {"combine": "OR", "matchers": [{"match": "type"}, {"match": "null"}]}
            for path in self.nullable
        }
        if self.body_regex is not None:
            rules["$"] = {
                "combine": "AND",
                "matchers": [{"match": "regex", "regex": self.body_regex}],
            }
        if rules:
            interaction.with_matching_rules({"body": rules}, "Response")


# -- the answers the SDK relies on ----------------------------------------------------------

ERROR_FIELDS = {"message": match.str("what went wrong"), "correlation_id": match.str("c0ffee")}

CAPABILITIES = {
    "api_version": match.regex("1.1.0", regex=r"^1\.\d+\.\d+$"),
    "orchestra_version": match.str("0.1.0"),
    "engines": match.each_like(
        {
            "engine": "llamacpp",
            "engine_version": "b5000",
            "mode": match.regex("attached", regex="^(owned|attached)$"),
        }
    ),
    "models": match.each_like({"id": "fake", "digest": "sha256:0", "ctx_max": 2048}),
    "pools": match.each_like(
        {
            "id": "default",
            "ready": True,
            "state": "ready",
            "slots_total": 1,
            "slots_busy": 0,
            "queue_depth": 0,
        }
    ),
    "limits": {
        "queue_capacity": match.int(2),
        "batch_queue_capacity": match.int(16),
        "max_tokens": match.int(1024),
        "ctx_limit": match.int(2048),
        "sessions": {
            "ttl_s": match.number(1800.0),
            "max_turns": match.int(100),
            "max_sessions": match.int(1024),
            "token_budget": match.int(0),
            "wall_budget_s": match.number(0.0),
            "cost_per_token": match.number(0.0),
            "cost_budget": match.number(0.0),
        },
    },
    "features": {"stream_resume": match.bool(True), "idempotent_task_id": match.bool(True)},
}
CAPABILITIES_NULLABLE = (
    "$.engines[*].engine_version",
    "$.models[*].id",
    "$.models[*].digest",
    "$.models[*].ctx_max",
)

HEALTH = {
    "pool_id": "default",
    "live": match.bool(True),
    "ready": match.bool(True),
    "draining": match.bool(False),
    "state": match.regex("ready", regex="^(ready|starting|unavailable|draining)$"),
    "engine": match.str("llamacpp"),
    "engine_version": "b5000",
    "model_id": "fake",
    "model_digest": "sha256:0",
    "slots_total": match.int(1),
    "slots_busy": match.int(0),
    "queue_depth": match.int(0),
    "queue_capacity": match.int(2),
    "api_version": match.str("1.1.0"),
}
HEALTH_NULLABLE = ("$.engine_version", "$.model_id", "$.model_digest")

MODEL = {
    "id": "fake",
    "object": "model",
    "created": 1796157983,
    "owned_by": "orchestra",
    "path": "/models/fake.gguf",
    "sha256": "06bcdbb59ea8f546d7573ef4e2326d8fb5a57b9e588f8ab42747ed218a954487",
    "digest": "sha256:06bc",
    "trust_state": "unverified",
    "state": "active",
    "size_bytes": 68,
    "registered_at": "2026-12-01T20:46:23Z",
    "verified_at": "2026-12-01T20:46:23Z",
    "loaded": True,
    "context": 2048,
    "aliases": match.type([]),
    "residency": "loaded",
}
MODEL_NULLABLE = tuple(
    f"$.data[*].{field}" for field in ("sha256", "digest", "size_bytes", "verified_at", "context")
)

ADMITTED = {
    "task_id": NEW_TASK,
    "queue_position": match.int(0),
    "predicted_start_ms": match.int(0),
    "stream_url": match.regex(f"/v1/tasks/{NEW_TASK}/stream", regex=r"^/v1/tasks/[^/]+/stream$"),
}

DONE_STATUS = {
    "task_id": DONE_TASK,
    "state": "completed",
    "queue_position": None,
    "predicted_start_ms": None,
    "tokens_out": match.int(4),
    "attempts": match.int(1),
    "error_code": None,
    "queue_wait_ms": match.int(0),
    "run_ms": match.int(8),
    "artifact_id": None,
    "artifact_error": None,
}

STREAM_EXAMPLE = (
    "id: 0\nevent: started\n"
    'data: {"queue_position":0,"predicted_start_ms":0,"queue_wait_ms":0}\n\n'
    'id: 1\nevent: token\ndata: {"t":" upon","i":0}\n\n'
    'id: 2\nevent: token\ndata: {"t":" a","i":1}\n\n'
    'id: 3\nevent: token\ndata: {"t":" time","i":2}\n\n'
    'id: 4\nevent: token\ndata: {"t":" there","i":3}\n\n'
    'id: 5\nevent: end\ndata: {"tokens_out":4,"decode_time_ms":2.775,"finish_reason":"length"}\n\n'
)
STREAM_REGEX = (
    r"^id: 0\nevent: started\n"
    r'data: \{"queue_position":[0-9]+,"predicted_start_ms":[0-9]+,"queue_wait_ms":[0-9]+[^\n]*\}\n\n'
    r'(id: [0-9]+\nevent: token\ndata: \{"t":"[^\n]*","i":[0-9]+\}\n\n)+'
    r'id: [0-9]+\nevent: end\ndata: \{"tokens_out":[0-9]+,"decode_time_ms":[0-9.]+[^\n]*\}\n\n$'
)
"""A finished task's whole stream: ``started``, one or more ``token``, ``end``, each with
the fields the SDK reads first in each event's data (the server writes them in that order;
a field added after them is allowed)."""


def artifact(text: str, kind: str, tags: list[str]) -> dict[str, Any]:
    return {
        "id": artifact_id(text),
        "kind": kind,
        "media_type": match.str("text/plain; charset=utf-8"),
        "size_bytes": len(text.encode()),
        "created_at": match.regex("2026-12-01T20:45:09.830Z", regex=RFC3339),
        "tags": tags,
        "parents": [],
        "session_id": None,
        "task_id": None,
        "meta": match.type({}),
        "content_url": f"/v1/artifacts/{artifact_id(text)}?raw=1",
    }


# -- the SDK calls ---------------------------------------------------------------------------


async def capabilities(client: AsyncClient) -> None:
    caps = await client.capabilities()
    assert caps.api_version.startswith("1.")
    assert caps.pools[0].id == "default" and caps.limits.queue_capacity == 2
    assert caps.limits.sessions is not None and caps.features["stream_resume"] is True


async def health(client: AsyncClient) -> None:
    h = await client.health()
    assert h.pool_id == "default" and h.ready and not h.draining


async def models(client: AsyncClient) -> None:
    (model,) = await client.models()
    assert model.id == "fake" and model.loaded and model.residency == "loaded"


async def submit(client: AsyncClient) -> None:
    request = TaskRequest(prompt="Once upon a time", max_tokens=4, seed=1, task_id=NEW_TASK)
    handle = await client.submit(request)
    assert handle.task_id == NEW_TASK and handle.stream_url.endswith("/stream")


async def status(client: AsyncClient) -> None:
    s = await client.status(DONE_TASK)
    assert s.state is TaskState.COMPLETED and s.queue_position is None and s.error_code is None


async def cancel(client: AsyncClient) -> None:
    result = await client.cancel(RUNNING_TASK)
    assert result.task_id == RUNNING_TASK and result.state is TaskState.CANCELLED


async def stream(client: AsyncClient) -> None:
    async with client.stream(DONE_TASK) as events:
        got = [event async for event in events]
    assert isinstance(got[0], Started) and isinstance(got[-1], End)
    assert all(isinstance(e, Token) for e in got[1:-1]) and got[-1].tokens_out == len(got) - 2


async def queue_full(client: AsyncClient) -> None:
    with pytest.raises(QueueFull) as caught:
        await client.submit(TaskRequest(prompt="one too many", max_tokens=4))
    assert caught.value.retriable and caught.value.retry_after_ms == 1000
    assert caught.value.policy_label == "queue_capacity"


async def unknown_task(client: AsyncClient) -> None:
    with pytest.raises(ServerError) as caught:
        await client.status("no-such-task")
    assert caught.value.code is ErrorCode.NOT_FOUND and caught.value.status == 404
    assert not caught.value.retriable


async def put_artifact(client: AsyncClient) -> None:
    kept = await client.put_artifact(PLAN, kind="plan", tags=["v1"])
    assert kept.id == artifact_id(PLAN) and kept.tags == ("v1",) and kept.parents == ()


async def get_artifact(client: AsyncClient) -> None:
    kept = await client.get_artifact(artifact_id(SUMMARY))
    assert kept.kind == "summary" and kept.size_bytes == len(SUMMARY)


async def read_artifact(client: AsyncClient) -> None:
    assert await client.read_artifact(artifact_id(SUMMARY)) == SUMMARY.encode()


ARTIFACT_STATE = "an artifact exists"
ARTIFACT_PARAMS = {"content": SUMMARY, "kind": "summary"}
ARTIFACT_PATH = "/v1/artifacts/" + quote(artifact_id(SUMMARY), safe="")
"""As the SDK sends it: the id quoted as one path segment (``sha256%3A...``)."""

CASES: tuple[Case, ...] = (
    Case(
        "a request for the capabilities",
        "GET",
        "/v1/capabilities",
        200,
        capabilities,
        CAPABILITIES,
        nullable=CAPABILITIES_NULLABLE,
    ),
    Case(
        "a request for the default pool's health",
        "GET",
        "/v1/pools/default/health",
        200,
        health,
        HEALTH,
        nullable=HEALTH_NULLABLE,
    ),
    Case(
        "a request for the models",
        "GET",
        "/v1/models",
        200,
        models,
        {"object": "list", "data": match.each_like(MODEL)},
        state="a model is in the catalog",
        params={"id": "fake"},
        nullable=MODEL_NULLABLE,
    ),
    Case(
        "a submission with room in the queue",
        "POST",
        "/v1/tasks",
        202,
        submit,
        ADMITTED,
        state="the queue has room",
        request_body={
            "prompt": "Once upon a time",
            "max_tokens": 4,
            "seed": 1,
            "task_id": NEW_TASK,
        },
    ),
    Case(
        "a submission when the queue is full",
        "POST",
        "/v1/tasks",
        429,
        queue_full,
        {
            "code": "ADMISSION_REJECT",
            "retriable": True,
            "retry_after_ms": match.int(1000),
            "policy_label": "queue_capacity",
            **ERROR_FIELDS,
        },
        state="the queue is full",
        request_body={"prompt": "one too many", "max_tokens": 4},
        headers={
            "Retry-After": match.regex("1", regex=INT),
            "X-Backoff-Ms": match.regex("1000", regex=INT),
        },
    ),
    Case(
        "a request for a completed task's status",
        "GET",
        f"/v1/tasks/{DONE_TASK}",
        200,
        status,
        DONE_STATUS,
        state="a task has completed",
        params={"task_id": DONE_TASK},
    ),
    Case(
        "a request for an unknown task's status",
        "GET",
        "/v1/tasks/no-such-task",
        404,
        unknown_task,
        {"code": "NOT_FOUND", "retriable": False, **ERROR_FIELDS},
        headers={"X-Correlation-Id": match.str("c0ffee")},
    ),
    Case(
        "a cancel of a running task",
        "POST",
        f"/v1/tasks/{RUNNING_TASK}/cancel",
        200,
        cancel,
        {"task_id": RUNNING_TASK, "state": "cancelled"},
        state="a task is running",
        params={"task_id": RUNNING_TASK},
    ),
    Case(
        "a request for a completed task's stream",
        "GET",
        f"/v1/tasks/{DONE_TASK}/stream",
        200,
        stream,
        STREAM_EXAMPLE,
        body_regex=STREAM_REGEX,
        content_type="text/event-stream",
        state="a task has completed",
        params={"task_id": DONE_TASK},
        request_headers={"Accept": "text/event-stream"},
    ),
    Case(
        "a put of a new text artifact",
        "POST",
        "/v1/artifacts",
        201,
        put_artifact,
        artifact(PLAN, "plan", ["v1"]),
        request_body={"content": PLAN, "kind": "plan", "tags": ["v1"]},
        headers={"Location": f"/v1/artifacts/{artifact_id(PLAN)}"},
    ),
    Case(
        "a request for an artifact's metadata",
        "GET",
        ARTIFACT_PATH,
        200,
        get_artifact,
        artifact(SUMMARY, "summary", []),
        state=ARTIFACT_STATE,
        params=ARTIFACT_PARAMS,
    ),
    Case(
        "a request for an artifact's content",
        "GET",
        ARTIFACT_PATH,
        200,
        read_artifact,
        SUMMARY,
        content_type="text/plain; charset=utf-8",
        state=ARTIFACT_STATE,
        params=ARTIFACT_PARAMS,
        query={"raw": "1"},
    ),
)


# -- the tests -------------------------------------------------------------------------------


def new_pact() -> Pact:
    return Pact(CONSUMER, PROVIDER).with_specification("V4")


async def run_cases(cases: tuple[Case, ...]) -> Pact:
    """A pact of ``cases``, each exercised by the SDK against Pact's mock server (which
    raises on leaving when a request did not match, or an interaction was not sent)."""
    pact = new_pact()
    for case in cases:
        case.add_to(pact)
    with pact.serve() as server:
        async with AsyncClient(str(server.url), token="", timeout_s=10) as client:
            for case in cases:
                await case.exercise(client)
    return pact


def normalised(pact_json: str) -> dict[str, Any]:
    """A pact file without the versions of the Pact library that wrote it."""
    document: dict[str, Any] = json.loads(pact_json)
    document.get("metadata", {}).pop("pactRust", None)
    return document


@pytest.mark.parametrize("case", CASES, ids=[case.exercise.__name__ for case in CASES])
async def test_sdk_honours_the_interaction(case: Case) -> None:
    await run_cases((case,))


async def test_checked_in_pact_is_current(tmp_path: Path) -> None:
    """All interactions, exercised together, give the checked-in pact file (or, with
    ``PACT_UPDATE=1``, replace it)."""
    pact = await run_cases(CASES)
    pact.write_file(tmp_path, overwrite=True)
    generated = (tmp_path / PACT_FILE.name).read_text()
    if os.environ.get(UPDATE_ENV) == "1":
        PACT_DIR.mkdir(parents=True, exist_ok=True)
        PACT_FILE.write_text(generated)
    assert PACT_FILE.exists(), f"no {PACT_FILE}: run {UPDATE_ENV}=1 pytest {__file__}"
    checked_in = normalised(PACT_FILE.read_text())
    if normalised(generated) != checked_in:
        diff = difflib.unified_diff(
            json.dumps(checked_in, indent=2, sort_keys=True).splitlines(),
            json.dumps(normalised(generated), indent=2, sort_keys=True).splitlines(),
            str(PACT_FILE),
            "generated",
            lineterm="",
        )
        pytest.fail(
            f"{PACT_FILE.name} is not what the consumer tests generate; if the change is "
            f"meant, run {UPDATE_ENV}=1 pytest tests/test_pacts_consumer.py\n" + "\n".join(diff)
        )
