"""Contract scenarios: every exchange an SDK call can have with a live server, defined once.

A :class:`Scenario` says which server to start (the fake llama-server, the real one in
owned mode, or an owned engine that crashes at once), how to bring it into a state (a full
queue, a drained pool, a task that hangs mid-stream ...) and which one request to send
then. :func:`capture` runs it and records the exchange (request and response) as a JSON
fixture in ``tests/fixtures/<name>.json``; ``tests/test_sdk_contract.py`` runs every
scenario again to check the server still answers like its fixture (drift), and replays
every fixture through ``httpx.MockTransport`` into the SDK. The fixture format is
described in ``tests/fixtures/README.md``.

Regenerate every fixture (or only the named ones)::

    scripts/capture-fixtures [NAME ...]
    .venv/bin/python -m tests.contract_scenarios [--out DIR] [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import attrs
import httpx
import trio

from orchestra.errors import ErrorCode
from orchestra.pool import PoolState
from orchestra.service import Running, run_service

from .engine import free_port, open_owned
from .harness import make_config, open_stack
from .models_harness import open_models

FIXTURES = Path(__file__).resolve().parent / "fixtures"

Engine = Literal["fake", "real", "crashing", "models"]
"""``fake``: orchestra (attached) in front of the fake llama-server, one slot;
``real``: orchestra owning the cached real llama-server and small model;
``crashing``: orchestra owning an "engine" (``/bin/false``) that exits at once, with
``crash_limit = 1``, so the pool is ``unavailable``; ``models``: orchestra with several
models (``[models.ID]``) over the fake engine started as llama-server
(:data:`MODELS`)."""

ENGINE_DESCRIPTIONS: Mapping[Engine, str] = {
    "fake": "orchestra (attached mode) in front of orchestra.testing.fake_llama, 1 slot",
    "real": "orchestra (owned mode) running the real llama-server on the small cached model",
    "crashing": "orchestra (owned mode) whose engine binary (/bin/false) exits at once",
    "models": "orchestra with [models.ID] tables over the fake engine run as llama-server: "
    "'broken' (its file fails to load), 'kept' (keep_loaded, 800 MiB) and 'big' (300 MiB), "
    "memory budget 1000 MiB",
}

MODELS: Mapping[str, Mapping[str, Any]] = {
    "broken": {"memory_mb": 100},
    "kept": {"memory_mb": 800, "keep_loaded": True},
    "big": {"memory_mb": 300},
}
"""The ``models`` server's models: one whose load fails, one that fills the budget and
stays, one that cannot fit beside it."""

BASE_CONFIG: Mapping[str, Any] = {
    "shutdown_grace_s": 0.0,
    "adapter": {"engine_backlog": 0},
    "admission": {"queue_capacity": 2},
}
"""Every scenario's server: one slot and nothing waiting inside the engine beyond it (so a
task that hangs keeps the next one queued), room for two waiting tasks, and no grace on
stop (a task left hanging is cancelled at once)."""

AUTH_CONFIG: Mapping[str, Any] = {"auth": {"token": "fixture-token", "optional": False}}
"""A server that requires a bearer token even on loopback."""

REQUEST_HEADERS = ("accept", "authorization", "content-type", "last-event-id", "x-correlation-id")
"""Request headers a fixture records (those a scenario sends itself)."""
RESPONSE_HEADERS = (
    "content-type",
    "retry-after",
    "x-backoff-ms",
    "x-correlation-id",
    "x-task-id",
    "location",
)
"""Response headers a fixture records, when the server sent them."""

VOLATILE: frozenset[str] = frozenset(
    {
        "decode_time_ms",  # measured
        "queue_wait_ms",  # measured
        "run_ms",  # measured
        "predicted_start_ms",  # from the observed service rate
        "retry_after_ms",  # from the observed service rate
        "registered_at",  # a date
        "created",  # the same date, in Unix seconds
        "verified_at",  # a date
        "message",  # prose for people; some carry timings or engine details
        "created_at",  # a date (an artifact's)
    }
)
"""JSON keys whose values may differ from one capture to the next, wherever they occur:
the drift check compares only their JSON type (and null-ness) with the fixture's."""
VOLATILE_HEADERS = frozenset({"retry-after", "x-backoff-ms"})
"""Response headers whose value varies (from the observed service rate): only their
presence (and that they are whole numbers) is compared."""

HANG = "[[hang:1]] a task that holds its slot until it is cancelled"
"""The fake engine streams one token for this prompt, then nothing until the client leaves."""
HAIKU = "Write a haiku about autumn."
WAIT_S = 30.0
"""Bound on every wait for a state."""


class Server(Protocol):
    """What a scenario needs of a live server: an HTTP client on it, and its actors."""

    @property
    def client(self) -> httpx.AsyncClient: ...
    @property
    def running(self) -> Running: ...


Prepare = Callable[[Server], Awaitable[None]]


@attrs.frozen
class Request:
    """The one request of a scenario whose exchange is recorded."""

    method: str
    path: str
    json: Any = None
    headers: Mapping[str, str] = attrs.field(factory=dict)


async def _nothing(server: Server) -> None:
    pass


@attrs.frozen(kw_only=True)
class Scenario:
    """One exchange: the server, the state it is brought into, the request sent then."""

    name: str
    """The fixture's file name, without ``.json``."""
    summary: str
    request: Request
    covers: ErrorCode | None = None
    """The error code the exchange answers with (in the envelope or the stream's ``error``)."""
    engine: Engine = "fake"
    config: Mapping[str, Any] = attrs.field(factory=dict)
    """Config sections merged over :data:`BASE_CONFIG`."""
    prepare: Prepare = _nothing
    volatile: frozenset[str] = frozenset()
    """JSON keys masked beyond :data:`VOLATILE` (the real engine's token texts, say)."""
    collapse_tokens: bool = False
    """Compare a stream's event kinds with runs of tokens merged (the real engine may stop
    at a different token on another CPU)."""

    @property
    def correlation_id(self) -> str:
        return f"fx-{self.name}"

    @property
    def masked(self) -> frozenset[str]:
        return VOLATILE | self.volatile

    @property
    def sdk_call(self) -> str:
        return sdk_call(self.request.method, self.request.path)


def sdk_call(method: str, path: str) -> str:
    """The ``AsyncClient`` method that sends ``method path``."""
    routes = [
        ("GET", r"/v1/capabilities", "capabilities"),
        ("GET", r"/v1/models", "models"),
        ("GET", r"/v1/pools/[^/]+/health", "health"),
        ("POST", r"/v1/tasks", "submit"),
        ("GET", r"/v1/tasks/[^/]+", "status"),
        ("POST", r"/v1/tasks/[^/]+/cancel", "cancel"),
        ("GET", r"/v1/tasks/[^/]+/stream", "stream"),
        ("GET", r"/v1/sessions/[^/]+", "session"),
        ("DELETE", r"/v1/sessions/[^/]+", "delete_session"),
        ("POST", r"/v1/models/[^/]+/load", "load_model"),
        ("POST", r"/v1/artifacts", "put_artifact"),
    ]
    for route_method, pattern, call in routes:
        if method == route_method and re.fullmatch(pattern, path):
            return call
    raise ValueError(f"no SDK call sends {method} {path}")


# -- bringing a server into a state ----------------------------------------------------------


async def submit(server: Server, **body: Any) -> str:
    response = await server.client.post("/v1/tasks", json=body)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


async def wait_tokens(server: Server, task_id: str, n: int = 1) -> None:
    """Wait until the task streamed ``n`` tokens (or ended)."""
    log = server.running.actors.queue.log_of(task_id)
    assert log is not None
    with trio.fail_after(WAIT_S):
        while log.tokens < n and not log.closed:
            await log.wait_beyond(len(log))


async def wait_end(server: Server, task_id: str) -> None:
    log = server.running.actors.queue.log_of(task_id)
    assert log is not None
    with trio.fail_after(WAIT_S):
        while not log.closed:
            await log.wait_beyond(len(log))


async def hang(server: Server, task_id: str, **body: Any) -> None:
    """A task that takes the slot and holds it (until cancelled), once it streamed a token."""
    await submit(server, prompt=HANG, max_tokens=64, task_id=task_id, **body)
    await wait_tokens(server, task_id)


def submitted(task_id: str, prompt: str = HAIKU, **body: Any) -> Prepare:
    async def prepare(server: Server) -> None:
        await submit(server, prompt=prompt, task_id=task_id, **body)

    return prepare


async def _fill_artifacts(server: Server) -> None:
    response = await server.client.post("/v1/artifacts", json={"kind": "text", "content": "x" * 60})
    assert response.status_code == 201, response.text


PLAN = {"kind": "plan", "content": "1. read the code\n2. change it\n", "tags": ["refactor"]}


def completed(task_id: str, **body: Any) -> Prepare:
    async def prepare(server: Server) -> None:
        await submit(server, prompt=HAIKU, max_tokens=4, seed=1, task_id=task_id, **body)
        await wait_end(server, task_id)

    return prepare


def hanging(task_id: str) -> Prepare:
    return partial(hang, task_id=task_id)


def cancelled_while_running(task_id: str) -> Prepare:
    async def prepare(server: Server) -> None:
        await hang(server, task_id)
        response = await server.client.post(f"/v1/tasks/{task_id}/cancel")
        assert response.json()["state"] == "cancelled", response.text

    return prepare


def queued_behind_a_hanging_task(task_id: str) -> Prepare:
    async def prepare(server: Server) -> None:
        await hang(server, "fx-holder")
        await submit(server, prompt=HAIKU, max_tokens=4, seed=1, task_id=task_id)

    return prepare


async def queue_full(server: Server) -> None:
    await hang(server, "fx-holder")
    for i in range(BASE_CONFIG["admission"]["queue_capacity"]):
        await submit(server, prompt=HAIKU, max_tokens=4, seed=1, task_id=f"fx-waiting-{i}")


async def drained(server: Server) -> None:
    response = await server.client.post("/v1/pools/default/drain", json={"deadline_ms": 5000})
    assert response.status_code == 200, response.text


async def unavailable(server: Server) -> None:
    with trio.fail_after(WAIT_S):
        await server.running.actors.queue.wait_pool_state(PoolState.UNAVAILABLE)


def ended_mid_stream(task_id: str, prompt: str) -> Prepare:
    async def prepare(server: Server) -> None:
        await submit(server, prompt=prompt, max_tokens=8, seed=1, task_id=task_id)
        await wait_end(server, task_id)

    return prepare


def _get(path: str, **headers: str) -> Request:
    return Request("GET", path, headers=headers)


def _post(path: str, body: Any = None) -> Request:
    headers = {} if body is None else {"content-type": "application/json"}
    return Request("POST", path, json=body, headers=headers)


def _delete(path: str) -> Request:
    return Request("DELETE", path)


def one_turn(session_id: str, task_id: str) -> Prepare:
    """A completed task of the session ``session_id`` (opening it)."""
    return completed(task_id, session_id=session_id)


def _stream(task_id: str, last_event_id: int | None = None) -> Request:
    headers = {"accept": "text/event-stream"}
    if last_event_id is not None:
        headers["last-event-id"] = str(last_event_id)
    return Request("GET", f"/v1/tasks/{task_id}/stream", headers=headers)


SUBMIT_BODY = {"prompt": HAIKU, "max_tokens": 4, "seed": 1}
SESSION = "fx-session"
SESSION_BUDGETS: Mapping[str, Any] = {
    "sessions": {
        "token_budget": 64,
        "wall_budget_s": 60.0,
        "cost_per_token": 0.001,
        "cost_budget": 1.0,
    }
}
"""Every budget of a session set, so that ``budget_left`` has no nulls."""
REAL_PROMPT = {"prompt": "Once upon a time", "max_tokens": 8, "seed": 1}

SCENARIOS: tuple[Scenario, ...] = (
    # -- discovery -----------------------------------------------------------------------
    Scenario(
        name="capabilities_200",
        summary="GET /v1/capabilities of a ready server (attached mode, fake engine)",
        request=_get("/v1/capabilities"),
    ),
    Scenario(
        name="capabilities_200_owned",
        summary="GET /v1/capabilities of a ready server owning the real llama-server",
        request=_get("/v1/capabilities"),
        engine="real",
    ),
    Scenario(
        name="capabilities_401_unauthorized",
        summary="GET /v1/capabilities without a bearer token on a server that requires one",
        request=_get("/v1/capabilities"),
        covers=ErrorCode.UNAUTHORIZED,
        config=AUTH_CONFIG,
    ),
    Scenario(
        name="health_200",
        summary="GET /v1/pools/default/health of a ready pool",
        request=_get("/v1/pools/default/health"),
    ),
    Scenario(
        name="health_200_owned",
        summary="GET /v1/pools/default/health of a ready pool on the real llama-server",
        request=_get("/v1/pools/default/health"),
        engine="real",
    ),
    Scenario(
        name="health_200_unavailable",
        summary="GET /v1/pools/default/health while the owned engine keeps crashing: not "
        "ready, with last_error",
        request=_get("/v1/pools/default/health"),
        engine="crashing",
        prepare=unavailable,
        volatile=frozenset({"last_error"}),  # the exit status and the crash count
    ),
    Scenario(
        name="load_model_422_model_load_failed",
        summary="POST /v1/models/broken/load: its file does not load (the engine exits 1); "
        "every other model keeps serving",
        request=_post("/v1/models/broken/load", {}),
        covers=ErrorCode.MODEL_LOAD_FAILED,
        engine="models",
    ),
    Scenario(
        name="submit_503_model_too_large",
        summary="POST /v1/tasks for 'big' (300 MiB) beside the keep_loaded 'kept' (800 MiB) "
        "under a 1000 MiB budget: refused at admission, with the figures",
        request=_post("/v1/tasks", {"prompt": HAIKU, "max_tokens": 4, "model_ref": "big"}),
        covers=ErrorCode.MODEL_TOO_LARGE,
        engine="models",
    ),
    Scenario(
        name="health_404_unknown_pool",
        summary="GET /v1/pools/gpu-1/health: there is only the pool 'default'",
        request=_get("/v1/pools/gpu-1/health"),
        covers=ErrorCode.NOT_FOUND,
    ),
    Scenario(
        name="models_200",
        summary="GET /v1/models of a server owning the real engine: the served model, loaded",
        request=_get("/v1/models"),
        engine="real",
        volatile=frozenset({"path", "idle_s", "last_used"}),  # the cache directory; the clock
    ),
    # -- submit --------------------------------------------------------------------------
    Scenario(
        name="submit_202",
        summary="POST /v1/tasks on an idle server: admitted, first in line",
        request=_post("/v1/tasks", {**SUBMIT_BODY, "task_id": "fx-submit"}),
    ),
    Scenario(
        name="submit_400_invalid_params",
        summary="POST /v1/tasks with three bad fields: every one is named in problems",
        request=_post(
            "/v1/tasks", {"prompt": HAIKU, "max_tokens": 0, "temperature": 11.5, "stop": [""]}
        ),
        covers=ErrorCode.INVALID_PARAMS,
    ),
    Scenario(
        name="submit_400_ctx_limit_exceeded",
        summary="POST /v1/tasks whose prompt (250 tokens) + max_tokens exceeds ctx_limit 256",
        request=_post("/v1/tasks", {"prompt": "word " * 250, "max_tokens": 16}),
        covers=ErrorCode.CTX_LIMIT_EXCEEDED,
        config={"admission": {"ctx_limit": 256, "max_tokens_limit": 128}},
    ),
    Scenario(
        name="submit_403_forbidden",
        summary="POST /v1/tasks with the wrong bearer token",
        request=Request(
            "POST",
            "/v1/tasks",
            json=SUBMIT_BODY,
            headers={"authorization": "Bearer wrong-token", "content-type": "application/json"},
        ),
        covers=ErrorCode.FORBIDDEN,
        config=AUTH_CONFIG,
    ),
    Scenario(
        name="submit_409_conflict",
        summary="POST /v1/tasks reusing a task_id with another body",
        request=_post(
            "/v1/tasks", {**SUBMIT_BODY, "prompt": "Write a haiku about spring.", "task_id": "fx-1"}
        ),
        covers=ErrorCode.CONFLICT,
        prepare=submitted("fx-1", max_tokens=4, seed=1),
    ),
    Scenario(
        name="submit_429_admission_reject",
        summary="POST /v1/tasks while one task runs and the queue (capacity 2) is full",
        request=_post("/v1/tasks", SUBMIT_BODY),
        covers=ErrorCode.ADMISSION_REJECT,
        prepare=queue_full,
    ),
    Scenario(
        name="submit_504_deadline_unmet",
        summary="POST /v1/tasks with a deadline shorter than the predicted wait (slot busy)",
        request=_post("/v1/tasks", {**SUBMIT_BODY, "deadline_ms": 300}),
        covers=ErrorCode.DEADLINE_UNMET,
        prepare=hanging("fx-holder"),
    ),
    Scenario(
        name="submit_503_pool_unready",
        summary="POST /v1/tasks after POST /v1/pools/default/drain",
        request=_post("/v1/tasks", SUBMIT_BODY),
        covers=ErrorCode.POOL_UNREADY,
        prepare=drained,
    ),
    Scenario(
        name="submit_503_pool_unavailable",
        summary="POST /v1/tasks while the owned engine keeps crashing (crash_limit reached)",
        request=_post("/v1/tasks", SUBMIT_BODY),
        covers=ErrorCode.POOL_UNAVAILABLE,
        engine="crashing",
        prepare=unavailable,
    ),
    Scenario(
        name="submit_409_session_busy",
        summary="POST /v1/tasks of a session whose previous turn is still running",
        request=_post("/v1/tasks", {**SUBMIT_BODY, "session_id": SESSION}),
        covers=ErrorCode.CONFLICT,
        prepare=partial(hang, task_id="fx-turn-1", session_id=SESSION),
    ),
    Scenario(
        name="submit_429_budget_exceeded",
        summary="POST /v1/tasks of a session that has had its one turn (sessions.max_turns = 1)",
        request=_post("/v1/tasks", {**SUBMIT_BODY, "session_id": SESSION}),
        covers=ErrorCode.BUDGET_EXCEEDED,
        config={"sessions": {"max_turns": 1}},
        prepare=one_turn(SESSION, "fx-turn-1"),
    ),
    Scenario(
        name="submit_429_max_sessions",
        summary="POST /v1/tasks opening a second session when sessions.max_sessions = 1",
        request=_post("/v1/tasks", {**SUBMIT_BODY, "session_id": "fx-session-2"}),
        covers=ErrorCode.ADMISSION_REJECT,
        config={"sessions": {"max_sessions": 1}},
        prepare=one_turn(SESSION, "fx-turn-1"),
    ),
    # -- status and cancel ---------------------------------------------------------------
    Scenario(
        name="status_200_completed",
        summary="GET /v1/tasks/{id} of a task that completed",
        request=_get("/v1/tasks/fx-done"),
        prepare=completed("fx-done"),
    ),
    Scenario(
        name="status_200_queued",
        summary="GET /v1/tasks/{id} of a task waiting behind a running one",
        request=_get("/v1/tasks/fx-queued"),
        prepare=queued_behind_a_hanging_task("fx-queued"),
    ),
    Scenario(
        name="status_200_failed",
        summary="GET /v1/tasks/{id} of a task that failed mid-stream (WORKER_RESET)",
        request=_get("/v1/tasks/fx-reset"),
        prepare=ended_mid_stream("fx-reset", "[[drop:2]] the engine dies after two tokens"),
    ),
    Scenario(
        name="status_404",
        summary="GET /v1/tasks/{id} of an unknown task",
        request=_get("/v1/tasks/fx-no-such-task"),
        covers=ErrorCode.NOT_FOUND,
    ),
    Scenario(
        name="cancel_200",
        summary="POST /v1/tasks/{id}/cancel of a running task",
        request=_post("/v1/tasks/fx-running/cancel"),
        prepare=hanging("fx-running"),
    ),
    Scenario(
        name="cancel_200_completed",
        summary="POST /v1/tasks/{id}/cancel of a task that already completed: its final state",
        request=_post("/v1/tasks/fx-done/cancel"),
        prepare=completed("fx-done"),
    ),
    Scenario(
        name="cancel_404",
        summary="POST /v1/tasks/{id}/cancel of an unknown task",
        request=_post("/v1/tasks/fx-no-such-task/cancel"),
        covers=ErrorCode.NOT_FOUND,
    ),
    # -- sessions ------------------------------------------------------------------------
    Scenario(
        name="session_200",
        summary="GET /v1/sessions/{id} after one completed turn, with every budget set",
        request=_get(f"/v1/sessions/{SESSION}"),
        config=SESSION_BUDGETS,
        prepare=one_turn(SESSION, "fx-turn-1"),
        volatile=frozenset({"wall_ms", "ttl_left_ms"}),  # measured
    ),
    Scenario(
        name="session_200_running",
        summary="GET /v1/sessions/{id} while its turn runs: task_id set, ttl_left_ms null",
        request=_get(f"/v1/sessions/{SESSION}"),
        prepare=partial(hang, task_id="fx-turn-1", session_id=SESSION),
        volatile=frozenset({"wall_ms", "ttl_left_ms"}),
    ),
    Scenario(
        name="session_404",
        summary="GET /v1/sessions/{id} of an unknown session",
        request=_get("/v1/sessions/fx-no-such-session"),
        covers=ErrorCode.NOT_FOUND,
    ),
    Scenario(
        name="delete_session_200",
        summary="DELETE /v1/sessions/{id} after one completed turn: the slot's cache erased",
        request=_delete(f"/v1/sessions/{SESSION}"),
        prepare=one_turn(SESSION, "fx-turn-1"),
        volatile=frozenset({"wall_ms", "ttl_left_ms"}),
    ),
    Scenario(
        name="delete_session_404",
        summary="DELETE /v1/sessions/{id} of an unknown session",
        request=_delete("/v1/sessions/fx-no-such-session"),
        covers=ErrorCode.NOT_FOUND,
    ),
    # -- streams -------------------------------------------------------------------------
    Scenario(
        name="stream_200_completed",
        summary="GET /v1/tasks/{id}/stream of a task that completes: started, 4 tokens, end",
        request=_stream("fx-stream"),
        prepare=submitted("fx-stream", max_tokens=4, seed=1),
    ),
    Scenario(
        name="stream_200_resumed",
        summary="GET /v1/tasks/{id}/stream with Last-Event-ID: 2: the events after id 2 only",
        request=_stream("fx-stream", last_event_id=2),
        prepare=completed("fx-stream"),
    ),
    Scenario(
        name="stream_200_cancelled",
        summary="GET /v1/tasks/{id}/stream of a task cancelled after its first token",
        request=_stream("fx-cancelled"),
        covers=ErrorCode.CANCELLED,
        prepare=cancelled_while_running("fx-cancelled"),
    ),
    Scenario(
        name="stream_200_worker_reset",
        summary="GET /v1/tasks/{id}/stream of a task whose engine connection dropped after "
        "two tokens ([[drop:2]])",
        request=_stream("fx-reset"),
        covers=ErrorCode.WORKER_RESET,
        prepare=ended_mid_stream("fx-reset", "[[drop:2]] the engine dies after two tokens"),
    ),
    Scenario(
        name="stream_200_decode_timeout",
        summary="GET /v1/tasks/{id}/stream of a task whose engine went silent after one "
        "token for longer than adapter.decode_timeout_s (0.5 s)",
        request=_stream("fx-silent"),
        covers=ErrorCode.DECODE_TIMEOUT,
        config={"adapter": {"decode_timeout_s": 0.5}},
        prepare=ended_mid_stream("fx-silent", "[[hang:1]] the engine goes silent"),
    ),
    Scenario(
        name="stream_200_budget_exceeded",
        summary="GET /v1/tasks/{id}/stream of a session's turn (max_tokens 8) cut at the "
        "session's token budget (sessions.token_budget = 3)",
        request=_stream("fx-turn-1"),
        covers=ErrorCode.BUDGET_EXCEEDED,
        config={"sessions": {"token_budget": 3}},
        prepare=submitted("fx-turn-1", max_tokens=8, seed=1, session_id=SESSION),
    ),
    Scenario(
        name="stream_200_real_engine",
        summary="GET /v1/tasks/{id}/stream of a task run by the real llama-server (seed 1)",
        request=_stream("fx-real"),
        engine="real",
        prepare=submitted("fx-real", **REAL_PROMPT),
        volatile=frozenset({"t", "i", "tokens_out"}),
        collapse_tokens=True,
    ),
    Scenario(
        name="stream_404",
        summary="GET /v1/tasks/{id}/stream of an unknown task",
        request=_stream("fx-no-such-task"),
        covers=ErrorCode.NOT_FOUND,
    ),
    # -- artifacts -----------------------------------------------------------------------
    Scenario(
        name="put_artifact_201",
        summary="POST /v1/artifacts: a plan kept as text, with a tag",
        request=_post("/v1/artifacts", PLAN),
    ),
    Scenario(
        name="put_artifact_413_artifact_too_large",
        summary="POST /v1/artifacts of 65 bytes with artifacts.max_artifact_bytes = 64",
        request=_post("/v1/artifacts", {"kind": "text", "content": "x" * 65}),
        covers=ErrorCode.ARTIFACT_TOO_LARGE,
        config={"artifacts": {"max_artifact_bytes": 64}},
    ),
    Scenario(
        name="put_artifact_507_storage_full",
        summary="POST /v1/artifacts of a plan when 60 of artifacts.max_total_bytes = 64 are used",
        request=_post("/v1/artifacts", PLAN),
        covers=ErrorCode.STORAGE_FULL,
        config={"artifacts": {"max_total_bytes": 64}},
        prepare=_fill_artifacts,
    ),
)
BY_NAME: Mapping[str, Scenario] = {scenario.name: scenario for scenario in SCENARIOS}
assert len(BY_NAME) == len(SCENARIOS), "two scenarios share a name"


# -- servers ---------------------------------------------------------------------------------


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``extra``, tables (dicts) merged key by key."""
    result = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


@attrs.frozen
class _Crashing:
    running: Running
    client: httpx.AsyncClient


@asynccontextmanager
async def open_crashing(**sections: Any) -> AsyncIterator[_Crashing]:
    """orchestra owning an engine that exits as soon as it starts (``/bin/false``): after
    ``crash_limit`` (1) crash the pool is ``unavailable`` and stays so (it keeps retrying)."""
    with tempfile.TemporaryDirectory(prefix="orchestra-crashing-") as tmp:
        model = Path(tmp) / "never-loaded.gguf"
        model.write_bytes(b"GGUF" + bytes(60))
        replica = {
            "binary": "/bin/false",
            "model": str(model),
            "crash_limit": 1,
            "restart_backoff_max_s": 1.0,
        }
        config = make_config(f"http://127.0.0.1:{free_port()}", replica=replica, **sections)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            running = await nursery.start(partial(run_service, config, stop=stop))
            async with httpx.AsyncClient(base_url=running.urls[0], timeout=WAIT_S) as client:
                yield _Crashing(running, client)
            stop.set()


@asynccontextmanager
async def open_server(scenario: Scenario) -> AsyncIterator[Server]:
    """A fresh server for ``scenario``, stopped on exit."""
    config = merged(BASE_CONFIG, scenario.config)
    if scenario.engine == "fake":
        async with open_stack(slots=1, **config) as stack:
            yield stack
    elif scenario.engine == "real":
        async with open_owned(**config) as owned:
            yield owned
    elif scenario.engine == "models":
        settings = {"broken": {"fail": True}}
        directory = Path(tempfile.mkdtemp(prefix="orchestra-fixture-models-"))
        budget = {"memory_budget_mb": 1000}
        async with open_models(directory, dict(MODELS), settings, placement=budget, **config) as m:
            await m.wait_residency("kept", "loaded")
            yield m
    else:
        async with open_crashing(**config) as crashing:
            yield crashing


# -- recording -------------------------------------------------------------------------------


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


@attrs.frozen
class Frame:
    """One server-sent event of a recorded stream."""

    id: int
    event: str
    data: Any


def sse_frames(text: str) -> list[Frame]:
    """The events of a recorded SSE body (orchestra writes ``id:``, ``event:`` and one
    ``data:`` line per event; comment lines are keep-alives)."""
    frames = []
    for block in re.split(r"\n\n+", text.strip("\n")):
        fields = dict(
            line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":")
        )
        if fields:
            frames.append(Frame(int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return frames


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


def volatile_in(scenario: Scenario, response: Mapping[str, Any]) -> list[str]:
    """The masked keys that occur in a recorded response (its JSON, or its events' data)."""
    if "sse" in response:
        keys = {key for frame in sse_frames(response["sse"]) for key in _keys(frame.data)}
    else:
        keys = _keys(response["json"])
    return sorted(keys & scenario.masked)


def record_request(scenario: Scenario) -> dict[str, Any]:
    request = scenario.request
    headers = {name.lower(): value for name, value in request.headers.items()}
    headers["x-correlation-id"] = scenario.correlation_id
    recorded: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "headers": dict(sorted(headers.items())),
    }
    if request.json is not None:
        recorded["json"] = request.json
    return recorded


def record_response(response: httpx.Response) -> dict[str, Any]:
    headers = {
        name: response.headers[name] for name in RESPONSE_HEADERS if name in response.headers
    }
    recorded: dict[str, Any] = {"status": response.status_code, "headers": headers}
    if media_type(response.headers.get("content-type", "")) == "text/event-stream":
        recorded["sse"] = response.text
    else:
        recorded["json"] = response.json()
    return recorded


async def exchange(server: Server, scenario: Scenario) -> dict[str, Any]:
    """Send the scenario's request to ``server`` (already prepared); the recorded exchange."""
    request = record_request(scenario)
    response = await server.client.request(
        request["method"], request["path"], headers=request["headers"], json=request.get("json")
    )
    return {"request": request, "response": record_response(response)}


async def capture(scenario: Scenario) -> dict[str, Any]:
    """Run ``scenario`` on a fresh server; its fixture (as JSON data)."""
    async with open_server(scenario) as server:
        await scenario.prepare(server)
        recorded = await exchange(server, scenario)
    return {
        "scenario": scenario.name,
        "summary": scenario.summary,
        "server": ENGINE_DESCRIPTIONS[scenario.engine],
        "sdk_call": scenario.sdk_call,
        "covers": None if scenario.covers is None else str(scenario.covers),
        "volatile": volatile_in(scenario, recorded["response"]),
        **recorded,
    }


def fixture_path(name: str, directory: Path = FIXTURES) -> Path:
    return directory / f"{name}.json"


def dumps(fixture: Mapping[str, Any]) -> str:
    return json.dumps(fixture, indent=2, ensure_ascii=False) + "\n"


def load(name: str, directory: Path = FIXTURES) -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads(fixture_path(name, directory).read_text())
    return fixture


async def capture_all(names: list[str]) -> dict[str, dict[str, Any]]:
    """The fixtures of the named scenarios, each captured on a fresh server."""
    return {name: await capture(BY_NAME[name]) for name in names}


def write_fixtures(fixtures: Mapping[str, Mapping[str, Any]], out: Path, *, whole: bool) -> None:
    """Write the fixtures into ``out``; with ``whole``, remove the fixtures of scenarios
    that no longer exist."""
    out.mkdir(parents=True, exist_ok=True)
    for name, fixture in fixtures.items():
        fixture_path(name, out).write_text(dumps(fixture))
        status = fixture["response"]["status"]
        print(f"{fixture_path(name, out)}: {status} {fixture['covers'] or ''}".rstrip())
    if whole:
        for stale in sorted(set(out.glob("*.json")) - {fixture_path(n, out) for n in fixtures}):
            stale.unlink()
            print(f"{stale}: removed (no such scenario)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/capture-fixtures",
        description="Run the contract scenarios against live servers and write their fixtures.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="scenarios (default: all)")
    parser.add_argument("--out", type=Path, default=FIXTURES, help="default: tests/fixtures")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for scenario in SCENARIOS:
            print(f"{scenario.name:32} {scenario.summary}")
        return 0
    unknown = [name for name in args.names if name not in BY_NAME]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)} (see --list)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("orchestra.engine").setLevel(logging.ERROR)  # llama-server's chatter
    names = args.names or [scenario.name for scenario in SCENARIOS]
    fixtures = trio.run(capture_all, names)
    write_fixtures(fixtures, args.out, whole=len(names) == len(SCENARIOS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
