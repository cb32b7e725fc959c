"""The SDK (``orchestra.sdk``): errors, retry, stream resume, cancel-on-abandon, the sync
face, and embedded mode, against a live server (fake engine; the real one for embedded
mode) or an exact ``httpx.MockTransport`` where a server cannot produce the case."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import orchestra.sdk as sdk
from orchestra.errors import ConfigError, OrchestraError
from orchestra.sdk import (
    AsyncClient,
    BudgetExceeded,
    BudgetLeft,
    Client,
    DeletedSession,
    DrainResult,
    End,
    ErrorCode,
    Metrics,
    ParseError,
    QueueFull,
    ReplicaSet,
    ResumeResult,
    Retry,
    ServerError,
    SessionStatus,
    Started,
    TaskFailed,
    TaskRequest,
    TaskState,
    TaskSummary,
    Token,
    TransportError,
)
from orchestra.sdk._sse import RawEvent, SSEDecoder

from .engine import free_port, require_engine
from .harness import make_config, open_stack

# -- the public surface --------------------------------------------------------------------


def test_public_names_are_reexported_and_documented() -> None:
    public = [name for name in dir(sdk) if not name.startswith("_")]
    assert {
        "Client",
        "AsyncClient",
        "TaskRequest",
        "OrchestraError",
        "QueueFull",
        "BudgetExceeded",
        "SessionStatus",
        "DeletedSession",
        "TaskSummary",
        "ReplicaSet",
        "DrainResult",
        "ResumeResult",
    } <= set(public)
    for name in public:
        value = getattr(sdk, name)
        if isinstance(value, type):
            assert value.__doc__, f"{name} has no docstring"
    # one root: everything the SDK raises is the package's OrchestraError
    for error in (TransportError, ParseError, ServerError, QueueFull, BudgetExceeded, TaskFailed):
        assert issubclass(error, OrchestraError)


# -- the SSE decoder -----------------------------------------------------------------------

_text = st.text(st.characters(exclude_characters="\r\n\0", exclude_categories=["Cs"]))


@given(
    events=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["token", "end"]), _text)),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(0, 10_000)),
)
def test_sse_decoder_is_independent_of_chunking(
    events: list[tuple[int, str, str]], newline: str, cuts: list[int]
) -> None:
    wire = "".join(
        f": keepalive{newline}id: {i}{newline}event: {kind}{newline}data: {data}{newline}{newline}"
        for i, kind, data in events
    ).encode()
    wire += b"\n"  # a CR that ends the stream is only known to be a line end by what follows
    decoder = SSEDecoder()
    got: list[RawEvent] = []
    start = 0
    for cut in [*sorted({c % (len(wire) + 1) for c in cuts}), len(wire)]:
        got += decoder.feed(wire[start:cut])
        start = cut
    assert got == [RawEvent(str(i), kind, data) for i, kind, data in events]


# -- errors and retry, exact (MockTransport) -----------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


def _envelope(code: str, status: int, **extra: Any) -> httpx.Response:
    body = {"code": code, "message": f"{code} here", "retriable": status in (429, 503)}
    body["correlation_id"] = "corr-1"
    return httpx.Response(status, json={**body, **extra})


_ACCEPTED = {"task_id": "t", "queue_position": 0, "predicted_start_ms": 0, "stream_url": "/s"}


def _mock(*answers: httpx.Response | Exception) -> tuple[AsyncClient, list[httpx.Request]]:
    """A client whose requests get ``answers`` in turn; the list of requests it sent."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        answer = answers[len(sent) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return AsyncClient("http://mock", transport=httpx.MockTransport(handler)), sent


async def test_server_errors_carry_the_envelope() -> None:
    client, _ = _mock(_envelope("INVALID_PARAMS", 400, problems=["prompt: must not be empty"]))
    with pytest.raises(ServerError) as caught:
        await client.submit(TaskRequest(prompt=""))
    error = caught.value
    assert (error.code, error.status, error.retriable) == (ErrorCode.INVALID_PARAMS, 400, False)
    assert error.correlation_id == "corr-1" and error.problems == ("prompt: must not be empty",)
    assert type(error) is ServerError


async def test_429_is_queue_full_with_retry_after_from_the_header_when_the_body_has_none() -> None:
    answer = _envelope("ADMISSION_REJECT", 429)
    answer.headers["Retry-After"] = "3"
    client, _ = _mock(answer)
    with pytest.raises(QueueFull) as caught:
        await client.submit(TaskRequest(prompt="x"))
    assert caught.value.retry_after_ms == 3000 and caught.value.retriable


@pytest.mark.parametrize("label", ["turns", "tokens", "wall_time"])
async def test_a_spent_session_budget_is_budget_exceeded_not_queue_full(label: str) -> None:
    answer = httpx.Response(
        429,
        json={
            "code": "BUDGET_EXCEEDED",
            "message": "session 'chat' has spent its budget",
            "retriable": False,
            "policy_label": label,
            "correlation_id": "corr-1",
        },
    )
    client, sent = _mock(answer, answer)
    client.retry = Retry()  # not retriable: retry on or off, it is raised at once
    with pytest.raises(BudgetExceeded) as caught:
        await client.submit(TaskRequest(prompt="x", session_id="chat"))
    error = caught.value
    assert isinstance(error, ServerError) and not isinstance(error, QueueFull)
    assert (error.code, error.status, error.retriable) == (ErrorCode.BUDGET_EXCEEDED, 429, False)
    assert (error.policy_label, error.retry_after_ms) == (label, None)
    assert len(sent) == 1 and json.loads(sent[0].content)["session_id"] == "chat"


async def test_too_many_sessions_is_queue_full() -> None:
    client, _ = _mock(
        _envelope("ADMISSION_REJECT", 429, retry_after_ms=1_800_000, policy_label="max_sessions")
    )
    with pytest.raises(QueueFull) as caught:
        await client.submit(TaskRequest(prompt="x", session_id="chat-2"))
    assert caught.value.policy_label == "max_sessions" and caught.value.retriable


_SESSION = {
    "session_id": "chat",
    "slot": 1,
    "turns": 2,
    "max_turns": 100,
    "tokens_in": 30,
    "tokens_out": 12,
    "cached_tokens": 18,
    "wall_ms": 250,
    "cost": 0.012,
    "budget_left": {"tokens": 52, "cost": None, "wall_ms": None},
    "ttl_left_ms": 1_799_000,
    "kv_warm": True,
    "task_id": None,
}


async def test_session_and_delete_session_read_the_answers() -> None:
    deleted = {**_SESSION, "deleted": True, "kv_erased": False, "from_a_newer_server": 1}
    client, sent = _mock(
        httpx.Response(200, json=_SESSION),
        httpx.Response(200, json=deleted),
        _envelope("NOT_FOUND", 404),
    )
    session = await client.session("chat")
    assert type(session) is SessionStatus
    assert (session.slot, session.turns, session.cached_tokens, session.cost) == (1, 2, 18, 0.012)
    assert session.budget_left == BudgetLeft(tokens=52, cost=None, wall_ms=None)
    gone = await client.delete_session("chat")
    assert isinstance(gone, DeletedSession) and gone.deleted and not gone.kv_erased
    assert gone.tokens_out == 12 and gone.task_id is None
    with pytest.raises(ServerError) as caught:
        await client.session("a/b")
    assert caught.value.code is ErrorCode.NOT_FOUND
    assert [(r.method, r.url.raw_path) for r in sent] == [
        ("GET", b"/v1/sessions/chat"),
        ("DELETE", b"/v1/sessions/chat"),
        ("GET", b"/v1/sessions/a%2Fb"),
    ]


@pytest.mark.parametrize(
    "broken",
    [
        {k: v for k, v in _SESSION.items() if k != "kv_warm"},
        {**_SESSION, "turns": "2"},
        {**_SESSION, "budget_left": {"tokens": 1, "cost": None}},
    ],
)
async def test_a_session_outside_the_contract_is_a_parse_error(broken: dict[str, Any]) -> None:
    client, _ = _mock(httpx.Response(200, json=broken))
    with pytest.raises(ParseError):
        await client.session("chat")


_SUMMARY = {
    "task_id": "t-1",
    "pool": "default",
    "state": "queued",
    "priority": "batch",
    "queue_position": 0,
    "predicted_start_ms": 1040,
    "tokens_out": 0,
    "max_tokens": 4,
    "replica": None,
    "attempts": 0,
    "age_ms": 12,
    "run_ms": None,
    "ended_ms_ago": None,
    "error_code": None,
    "error_message": None,
    "session_id": None,
    "face": "v1",
}


async def test_list_tasks_sends_the_filters_and_reads_the_summaries() -> None:
    answer = httpx.Response(200, json={"tasks": [{**_SUMMARY, "from_a_newer_server": 1}]})
    client, sent = _mock(answer, answer, answer, answer)
    [task] = await client.list_tasks()
    fields = {**_SUMMARY, "state": TaskState.QUEUED, "priority": sdk.Priority.BATCH}
    assert task == TaskSummary(**fields)
    await client.list_tasks(state=["running", TaskState.QUEUED], pool="gemma", limit=5)
    await client.list_tasks(state=TaskState.FAILED)
    await client.list_tasks(state="completed,cancelled")
    assert [(r.url.path, dict(r.url.params)) for r in sent] == [
        ("/v1/tasks", {}),
        ("/v1/tasks", {"state": "running,queued", "pool": "gemma", "limit": "5"}),
        ("/v1/tasks", {"state": "failed"}),
        ("/v1/tasks", {"state": "completed,cancelled"}),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"tasks": [{**_SUMMARY, "state": "lost"}]},
        {"tasks": [{k: v for k, v in _SUMMARY.items() if k != "pool"}]},
        {"data": []},
    ],
)
async def test_a_task_list_outside_the_contract_is_a_parse_error(body: dict[str, Any]) -> None:
    client, _ = _mock(httpx.Response(200, json=body))
    with pytest.raises(ParseError, match="GET /v1/tasks"):
        await client.list_tasks()


_SLO = {"window_s": 300.0, "tasks": 3, "ttft_ms_p50": 61.8, "ttft_ms_p95": 72, "tokens_per_s": None}
_REPLICA = {
    "id": "default/0",
    "kind": "attached",
    "endpoint": "http://127.0.0.1:8081",
    "engine": "llamacpp",
    "engine_version": None,
    "mode": "attached",
    "state": "ready",
    "detail": "ready",
    "pid": None,
    "model": {"id": "small", "digest": None},
    "slots_total": 1,
    "slots_busy": 0,
    "queue_depth": 0,
    "restarts": 0,
    "slo": _SLO,
    "predicted_start": {"samples": 3, "abs_error_ms_p50": 0, "abs_error_ms_p95": None},
}
_SET = {
    "id": "default",
    "pool_id": "default",
    "state": "ready",
    "slo": _SLO,
    "replicas": [_REPLICA],
}


async def test_replica_sets_read_the_answer_and_an_older_server_has_no_token_count() -> None:
    client, sent = _mock(
        httpx.Response(200, json={"replicasets": [{**_SET, "tokens_out_total": 48}]}),
        httpx.Response(200, json={"replicasets": [_SET]}),
        httpx.Response(200, json={"replicasets": [{**_SET, "tokens_out_total": "48"}]}),
    )
    [one] = await client.replica_sets()
    assert isinstance(one, ReplicaSet) and one.tokens_out_total == 48
    assert one.slo.ttft_ms_p95 == 72.0 and one.slo.tokens_per_s is None
    [replica] = one.replicas
    assert (replica.id, replica.model.id, replica.pid) == ("default/0", "small", None)
    assert replica.predicted_start.samples == 3
    assert (await client.replica_sets())[0].tokens_out_total is None
    with pytest.raises(ParseError, match="tokens_out_total"):
        await client.replica_sets()
    assert {r.url.path for r in sent} == {"/v1/replicasets"}


async def test_drain_and_resume_send_their_bodies_and_read_the_answers() -> None:
    drained = {
        "pool_id": "gpu",
        "state": "drained",
        "finished": 1,
        "cancelled": 0,
        "requeued": 2,
        "queued": 3,
        "waited_ms": 412,
    }
    client, sent = _mock(
        httpx.Response(200, json=drained),
        httpx.Response(200, json=drained),
        httpx.Response(200, json={"pool_id": "gpu", "state": "ready"}),
        _envelope("CONFLICT", 409),
    )
    assert await client.drain("gpu") == DrainResult(**drained)
    await client.drain("gpu", deadline_ms=5000)
    assert await client.resume("gpu") == ResumeResult(pool_id="gpu", state="ready")
    with pytest.raises(ServerError) as caught:
        await client.drain()
    assert (caught.value.code, caught.value.status) == (ErrorCode.CONFLICT, 409)
    assert [(r.method, r.url.path, json.loads(r.content)) for r in sent] == [
        ("POST", "/v1/pools/gpu/drain", {}),
        ("POST", "/v1/pools/gpu/drain", {"deadline_ms": 5000}),
        ("POST", "/v1/pools/gpu/resume", {}),
        ("POST", "/v1/pools/default/drain", {}),
    ]
    # the answer comes once the running tasks ended: the read timeout covers the deadline
    assert [r.extensions["timeout"]["read"] for r in sent[:2]] == [60.0, 35.0]


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (httpx.Response(502, text="<html>Bad Gateway</html>"), "not orchestra's error envelope"),
        (httpx.Response(500, json={"detail": "x"}), "required field missing @ $.code"),
        (httpx.Response(200, json={"task_id": 1}), "expected str @ $.task_id"),
        (httpx.Response(200, text="not json"), "not JSON"),
        (_envelope("NO_SUCH_CODE", 400), "$.code"),
    ],
)
async def test_answers_outside_the_contract_are_parse_errors(
    answer: httpx.Response, fragment: str
) -> None:
    client, _ = _mock(answer)
    with pytest.raises(ParseError) as caught:
        await client.status("t")
    assert fragment in str(caught.value) and caught.value.status == answer.status_code


async def test_no_connection_is_a_transport_error_that_was_not_sent() -> None:
    client, _ = _mock(httpx.ConnectError("refused"))
    with pytest.raises(TransportError) as caught:
        await client.health()
    assert not caught.value.request_sent and "refused" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_retry_is_off_unless_asked() -> None:
    client, sent = _mock(_envelope("ADMISSION_REJECT", 429, retry_after_ms=100))
    with pytest.raises(QueueFull):
        await client.submit(TaskRequest(prompt="x"))
    assert len(sent) == 1 and "task_id" not in json.loads(sent[0].content)


async def test_retry_waits_what_retry_after_says_and_keeps_the_task_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, sent = _mock(
        _envelope("ADMISSION_REJECT", 429, retry_after_ms=1500),
        _envelope("POOL_UNREADY", 503, retry_after_ms=700),
        httpx.ConnectError("refused"),
        httpx.Response(202, json=_ACCEPTED),
    )
    client.retry = Retry(attempts=4, backoff_s=0.25)
    began = trio.current_time()
    handle = await client.submit(TaskRequest(prompt="x"))
    assert handle.task_id == "t" and len(sent) == 4
    assert trio.current_time() - began == pytest.approx(1.5 + 0.7 + 1.0)  # 0.25 doubled twice
    ids = {json.loads(request.content)["task_id"] for request in sent}
    assert len(ids) == 1  # one generated id: the retried submission is idempotent


@pytest.mark.parametrize(
    ("retry", "answers", "tries"),
    [
        (Retry(attempts=2), [_envelope("ADMISSION_REJECT", 429)] * 2, 2),
        (Retry(max_wait_s=1), [_envelope("ADMISSION_REJECT", 429, retry_after_ms=5000)], 1),
        (Retry(), [_envelope("INVALID_PARAMS", 400)], 1),
        (Retry(), [_envelope("CONFLICT", 409)], 1),
    ],
)
async def test_retry_gives_up_when_it_should(
    autojump_clock: trio.testing.MockClock,
    retry: Retry,
    answers: list[httpx.Response],
    tries: int,
) -> None:
    client, sent = _mock(*answers)
    client.retry = retry
    with pytest.raises(ServerError):
        await client.submit(TaskRequest(prompt="x"))
    assert len(sent) == tries


# -- against a live server (fake engine) ---------------------------------------------------


async def test_the_calls_against_a_live_server() -> None:
    async with open_stack() as stack, AsyncClient(stack.running.urls[0]) as client:
        caps = await client.capabilities()
        assert caps.api_version == sdk.API_VERSION and caps.pools[0].id == "default"
        health = await client.health()
        assert health.ready and health.pool_id == "default"
        assert await client.models() == ()
        handle = await client.submit(TaskRequest(prompt="hi", max_tokens=3, task_id="live-1"))
        assert handle.task_id == "live-1" and handle.stream_url.endswith("/live-1/stream")
        async with client.stream(handle.task_id) as events:
            got = [event async for event in events]
        assert [type(e) for e in got] == [Started, Token, Token, Token, End]
        assert [e.id for e in got] == [0, 1, 2, 3, 4]
        status = await client.status("live-1")
        assert status.state is TaskState.COMPLETED and status.tokens_out == 3
        assert (await client.cancel("live-1")).state is TaskState.COMPLETED
        done = await client.complete("hi", max_tokens=3, seed=7)
        assert done.tokens_out == 3 and len(done.text.split()) == 3
        with pytest.raises(ServerError) as caught:
            await client.health("nope")
        assert caught.value.code is ErrorCode.NOT_FOUND and caught.value.status == 404


async def test_sessions_against_a_live_server() -> None:
    sessions = {"max_turns": 2, "token_budget": 5, "cost_per_token": 0.5}
    async with (
        open_stack(sessions=sessions) as stack,
        AsyncClient(stack.running.urls[0]) as client,
    ):
        caps = await client.capabilities()
        assert caps.limits.sessions is not None and caps.limits.sessions.max_turns == 2
        assert caps.features["sessions"] is True
        first = await client.complete("hi", max_tokens=3, session_id="chat")
        assert first.tokens_out == 3
        session = await client.session("chat")
        assert (session.turns, session.tokens_out, session.cost) == (1, 3, 1.5)
        assert session.budget_left.tokens == 2 and session.kv_warm and session.task_id is None
        with pytest.raises(TaskFailed) as cut:  # 2 tokens left of the budget, 8 asked for
            await client.complete("more", max_tokens=8, session_id="chat")
        assert (cut.value.code, cut.value.retriable) == (ErrorCode.BUDGET_EXCEEDED, False)
        assert len(cut.value.text.split()) == 2
        with pytest.raises(BudgetExceeded) as spent:
            await client.submit(TaskRequest(prompt="again", max_tokens=1, session_id="chat"))
        assert spent.value.policy_label in ("turns", "tokens")
        gone = await client.delete_session("chat")
        assert gone.deleted and gone.turns == 2 and gone.tokens_out == 5
        with pytest.raises(ServerError) as unknown:
            await client.session("chat")
        assert unknown.value.code is ErrorCode.NOT_FOUND


_HANG = "[[hang:1]] holds its slot until cancelled"
_ONE_SLOT: dict[str, Any] = {"adapter": {"engine_backlog": 0}, "shutdown_grace_s": 0.0}


async def test_list_tasks_replica_sets_drain_and_resume_against_a_live_server() -> None:
    async with open_stack(**_ONE_SLOT) as stack, AsyncClient(stack.running.urls[0]) as client:
        [before] = await client.replica_sets()
        assert (before.id, before.pool_id, before.state) == ("default", "default", "ready")
        assert before.tokens_out_total == 0 and [r.id for r in before.replicas] == ["default/0"]
        assert before.replicas[0].slots_total == 1 and before.slo.tasks == 0
        assert await client.list_tasks() == ()

        await client.submit(TaskRequest(prompt=_HANG, max_tokens=8, task_id="ps-run"))
        log = stack.running.actors.queue.log_of("ps-run")
        assert log is not None
        while log.tokens < 1:
            await log.wait_beyond(len(log))
        await client.submit(TaskRequest(prompt="waits", max_tokens=3, task_id="ps-wait"))
        running, waiting = await client.list_tasks()
        assert (running.task_id, running.state, running.pool) == (
            "ps-run",
            TaskState.RUNNING,
            "default",
        )
        assert (
            running.tokens_out >= 1 and running.max_tokens == 8 and running.replica == "default/0"
        )
        assert running.queue_position is None and running.run_ms is not None
        assert (waiting.task_id, waiting.state, waiting.queue_position) == (
            "ps-wait",
            TaskState.QUEUED,
            0,
        )
        assert waiting.predicted_start_ms is not None and waiting.replica is None
        assert waiting.priority is sdk.Priority.INTERACTIVE and waiting.face == "v1"
        assert [t.task_id for t in await client.list_tasks(state="queued")] == ["ps-wait"]
        assert [t.task_id for t in await client.list_tasks(limit=1)] == ["ps-run"]
        assert [t.task_id for t in await client.list_tasks(pool="default")] == ["ps-run", "ps-wait"]
        with pytest.raises(ServerError) as bad_state:
            await client.list_tasks(state=["running", "lost"])
        assert (bad_state.value.code, bad_state.value.status) == (ErrorCode.INVALID_PARAMS, 400)
        with pytest.raises(ServerError) as no_pool:
            await client.list_tasks(pool="nope")
        assert no_pool.value.code is ErrorCode.NOT_FOUND

        await client.cancel("ps-run")
        await stack.wait_state("ps-wait", "completed")
        ended = await client.list_tasks(state=["completed", "cancelled"])
        assert [(t.task_id, t.state) for t in ended] == [
            ("ps-wait", TaskState.COMPLETED),
            ("ps-run", TaskState.CANCELLED),
        ]
        assert ended[0].tokens_out == 3 and ended[0].ended_ms_ago is not None
        [after] = await client.replica_sets()
        assert after.tokens_out_total is not None and after.tokens_out_total >= 4  # 1 + 3

        drained = await client.drain(deadline_ms=1000)
        assert (drained.pool_id, drained.state, drained.queued) == ("default", "drained", 0)
        with pytest.raises(ServerError) as unready:
            await client.submit(TaskRequest(prompt="refused", max_tokens=1))
        assert (unready.value.code, unready.value.status) == (ErrorCode.POOL_UNREADY, 503)
        assert (await client.replica_sets())[0].state == "draining"
        resumed = await client.resume()
        assert (resumed.pool_id, resumed.state) == ("default", "ready")
        assert (await client.complete("taken again", max_tokens=2)).tokens_out == 2
        with pytest.raises(ServerError) as unknown:
            await client.drain("nope")
        assert unknown.value.code is ErrorCode.NOT_FOUND


async def test_metrics_events_when_asked_for() -> None:
    async with open_stack() as stack, AsyncClient(stack.running.urls[0]) as client:
        request = TaskRequest(prompt="hi", max_tokens=9, deadline_ms=60_000, metrics=True)
        handle = await client.submit(request)
        async with client.stream(handle.task_id) as events:
            got = [event async for event in events]
        assert [type(e) for e in got] == [Started] + [Token] * 8 + [Metrics, Token, End]
        [metrics] = [e for e in got if isinstance(e, Metrics)]
        assert set(metrics.values) == {"queue_depth", "tokens_per_s", "on_time_probability"}


async def test_complete_raises_task_failed_with_the_text_so_far() -> None:
    async with (
        open_stack(token_delay_s=0.02) as stack,
        AsyncClient(stack.running.urls[0]) as client,
    ):
        async with trio.open_nursery() as nursery:

            async def cancel_after_first_token() -> None:
                await stack.fake.wait_until(lambda: stack.fake.completions_started >= 1)
                log = stack.running.actors.queue.log_of("fail-1")
                assert log is not None
                while log.tokens < 2:
                    await log.wait_beyond(len(log))
                await client.cancel("fail-1")

            nursery.start_soon(cancel_after_first_token)
            with pytest.raises(TaskFailed) as caught:
                await client.complete("x", max_tokens=200, task_id="fail-1")
        assert caught.value.code is ErrorCode.CANCELLED and caught.value.task_id == "fail-1"
        assert caught.value.text.strip() and caught.value.status is None


async def test_cancelling_complete_cancels_the_task_on_the_server() -> None:
    async with (
        open_stack(token_delay_s=0.02) as stack,
        AsyncClient(stack.running.urls[0]) as client,
    ):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(client.complete, "x", max_tokens=200, task_id="ab-1"))
                await stack.fake.wait_until(lambda: stack.fake.completions_started >= 1)
                scope.cancel()
        view = stack.running.actors.queue.view("ab-1")
        assert view is not None and view.state is TaskState.CANCELLED


# -- stream resume through a proxy that cuts connections -----------------------------------


@attrs.define
class CuttingProxy:
    """A TCP proxy to ``target`` whose open connections :meth:`cut` closes at once."""

    target: int
    accepting: bool = True
    requests: list[bytes] = attrs.field(factory=list)
    _scopes: list[trio.CancelScope] = attrs.field(factory=list)

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(f"http://127.0.0.1:{port}")

    async def _handle(self, downstream: trio.SocketStream) -> None:
        async with downstream:
            if not self.accepting:
                return
            with trio.CancelScope() as scope:
                self._scopes.append(scope)
                upstream = await trio.open_tcp_stream("127.0.0.1", self.target)
                async with upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, downstream, upstream, True)
                    nursery.start_soon(self._pump, upstream, downstream, False)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream, record: bool) -> None:
        async for chunk in source:
            if record:
                self.requests.append(chunk)
            await sink.send_all(chunk)

    def cut(self) -> None:
        for scope in self._scopes:
            scope.cancel()
        self._scopes.clear()


@asynccontextmanager
async def _proxied(**stack_options: Any) -> AsyncIterator[tuple[Any, CuttingProxy, str]]:
    async with open_stack(**stack_options) as stack, trio.open_nursery() as nursery:
        port = int(stack.running.urls[0].rsplit(":", 1)[1])
        proxy = CuttingProxy(port)
        url = await nursery.start(proxy.serve)
        yield stack, proxy, url
        nursery.cancel_scope.cancel()


async def test_a_dropped_stream_resumes_without_losing_or_repeating_a_token() -> None:
    async with _proxied(token_delay_s=0.01) as (stack, proxy, url), AsyncClient(url) as client:
        handle = await client.submit(TaskRequest(prompt="x", max_tokens=40, task_id="cut-1"))
        got = []
        async with client.stream(handle.task_id) as events:
            async for event in events:
                got.append(event)
                if isinstance(event, Token) and event.index in (5, 20):
                    proxy.cut()  # twice, mid-stream
        assert [e.id for e in got] == list(range(42))  # started, 40 tokens, end
        assert [e.index for e in got if isinstance(e, Token)] == list(range(40))
        assert isinstance(got[-1], End)
        streams = [r for r in proxy.requests if r.startswith(b"GET /v1/tasks/cut-1/stream")]
        assert len(streams) == 3
        assert b"last-event-id: 6\r\n" in streams[1].lower()
        assert b"last-event-id: 21\r\n" in streams[2].lower()
        server_tokens = [e.data["t"] for e in await stack.stream("cut-1") if e.event == "token"]
        assert [e.text for e in got if isinstance(e, Token)] == server_tokens


async def test_a_stream_that_cannot_reconnect_gives_up_with_a_transport_error() -> None:
    got: list[sdk.Event] = []

    async def read(client: AsyncClient, proxy: CuttingProxy, task_id: str) -> None:
        async with client.stream(task_id) as events:
            async for event in events:
                got.append(event)
                if isinstance(event, Token):
                    proxy.accepting = False
                    proxy.cut()

    async with (
        _proxied(token_delay_s=0.01) as (_, proxy, url),
        AsyncClient(url, resume_attempts=2) as client,
    ):
        handle = await client.submit(TaskRequest(prompt="x", max_tokens=100))
        with pytest.raises(TransportError, match="dropped 3 times in a row"):
            await read(client, proxy, handle.task_id)
        assert len(got) == 2  # started and the first token, nothing after


# -- the sync face -------------------------------------------------------------------------


async def test_the_sync_client_gives_the_same_answers_and_errors() -> None:
    async with open_stack() as stack:
        url = stack.running.urls[0]

        def use() -> tuple[Any, ...]:
            with Client(url) as client:
                handle = client.submit(TaskRequest(prompt="hi", max_tokens=3, task_id="sync-1"))
                with client.stream(handle.task_id) as events:
                    kinds = [type(event).__name__ for event in events]
                done = client.complete("hi", max_tokens=2, session_id="sync-chat")
                with pytest.raises(ServerError) as caught:
                    client.status("missing")
                turns = client.session("sync-chat").turns
                erased = client.delete_session("sync-chat").deleted
                listed = [t.task_id for t in client.list_tasks(state="completed")]
                sets = [(s.id, s.tokens_out_total) for s in client.replica_sets()]
                drained = client.drain(deadline_ms=0).state
                resumed = client.resume().state
                return (
                    kinds,
                    done.tokens_out,
                    caught.value.code,
                    client.health().ready,
                    turns,
                    erased,
                    (listed, sets, drained, resumed),
                )

        kinds, tokens, code, ready, turns, deleted, ops = await trio.to_thread.run_sync(use)
        assert kinds == ["Started", "Token", "Token", "Token", "End"]
        assert (tokens, code, ready, turns, deleted) == (2, ErrorCode.NOT_FOUND, True, 1, True)
        listed, sets, drained, resumed = ops
        assert len(listed) == 2 and listed[1] == "sync-1"  # the latest to end first
        assert (sets, drained, resumed) == ([("default", 5)], "drained", "ready")


async def test_the_sync_client_raises_transport_errors_in_the_caller() -> None:
    def use() -> None:
        with Client(f"http://127.0.0.1:{free_port()}") as client:
            client.capabilities()

    with pytest.raises(TransportError):
        await trio.to_thread.run_sync(use)


_INTERRUPTED_SCRIPT = """
import sys
from orchestra.sdk import Client
client = Client(sys.argv[1])
try:
    client.complete("x", max_tokens=500, task_id="ctrl-c")
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


async def test_ctrl_c_in_a_sync_complete_cancels_the_task_on_the_server() -> None:
    async with open_stack(token_delay_s=0.02) as stack:
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(
                    trio.run_process,
                    [sys.executable, "-c", _INTERRUPTED_SCRIPT, stack.running.urls[0]],
                    capture_stdout=True,
                    check=False,
                )
            )
            await stack.fake.wait_until(lambda: stack.fake.completions_started >= 1)
            process.send_signal(signal.SIGINT)
        assert process.returncode == 130
        view = stack.running.actors.queue.view("ctrl-c")
        assert view is not None and view.state is TaskState.CANCELLED


# -- embedded mode -------------------------------------------------------------------------


async def test_embedded_over_the_fake_engine_streams_and_disconnects_like_http() -> None:
    async with open_stack(token_delay_s=0.01) as stack:
        config = make_config(stack.config.adapter.endpoint, streams={"orphan_grace_ms": 0})
        async with AsyncClient.embedded(config) as client:
            assert client.url == "http://orchestra.embedded"
            handle = await client.submit(TaskRequest(prompt="x", max_tokens=300, task_id="e-1"))
            async with client.stream(handle.task_id) as events:
                async for event in events:
                    if isinstance(event, Token):
                        break  # leaving the stream disconnects: the orphaned task is cancelled
            await stack.fake.wait_until(lambda: stack.fake.disconnects >= 1)
            status = await client.status("e-1")
            assert status.state is TaskState.CANCELLED
            with pytest.raises(ServerError) as caught:
                await client.submit(TaskRequest(prompt=""))
            assert caught.value.status == 400 and caught.value.correlation_id


def _owned_config() -> Any:
    require_engine()
    return make_config(
        f"http://127.0.0.1:{free_port()}",
        replica={"parallel": 2, "threads": 2, "ctx_size": 2048},
        shutdown_grace_s=0.0,
    )


@pytest.mark.slow
async def test_embedded_async_client_runs_the_real_engine_with_the_same_api() -> None:
    with trio.fail_after(120):
        async with AsyncClient.embedded(_owned_config()) as client:
            health = await client.health()
            assert health.ready and health.model_id == "SmolLM2-135M-Instruct.Q4_1"
            first = await client.complete("Once upon a time", max_tokens=16, seed=3)
            again = await client.complete("Once upon a time", max_tokens=16, seed=3)
            assert first.tokens_out == 16 and first.text and first.text == again.text
            with pytest.raises(ServerError) as caught:
                await client.status("nope")
            assert caught.value.code is ErrorCode.NOT_FOUND


@pytest.mark.slow
async def test_embedded_sync_client_and_a_server_give_the_same_bytes() -> None:
    """The one-line switch: the same script against embedded mode (its default config:
    the cached engine and model) and a live server."""
    require_engine()

    def script(client: Client) -> str:
        return client.complete("The capital of France is", max_tokens=12, seed=11).text

    def embedded() -> str:
        with Client.embedded() as client:
            return script(client)

    embedded_text = await trio.to_thread.run_sync(embedded)
    from .engine import open_owned

    async with open_owned() as owned:
        url = owned.running.urls[0]

        def served() -> str:
            with Client(url) as client:
                return script(client)

        served_text = await trio.to_thread.run_sync(served)
    assert embedded_text and embedded_text == served_text


def test_embedded_without_an_installed_engine_says_what_to_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("ORCHESTRA_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError, match="run `orchestra engine install`"):
        Client.embedded()
