"""What the status page reads, against a live orchestra on the fake engine: ``GET /v1/tasks``
(its running and waiting tasks and recent errors), the pools' ``tokens_out_total`` (its
tokens/s chart), a stream it only watches (``?watch=true``), the stream cookie its
EventSource authenticates with, and ``GET /health``'s word on the token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from orchestra.events import EventKind, EventLog
from orchestra.scheduling.record import Task
from orchestra.scheduling.table import TaskTable
from orchestra.task import Priority, TaskRequest, TaskState

from .test_openapi import HANG, Live, fake_server, hang, parse_frames, run_to_end, submit

TOKEN = "page-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One slot, nothing waiting inside the engine, so a second task waits in the line."""
    with fake_server(
        tmp_path_factory.mktemp("task-list"),
        adapter={"engine_backlog": 0},
        admission={"queue_capacity": 8},
    ) as server:
        yield server


@pytest.fixture
def clean(live: Live) -> Iterator[Live]:
    """Cancel whatever a test left running or waiting."""
    yield live
    for task in live.request("GET", "/v1/tasks").json()["tasks"]:
        live.request("POST", f"/v1/tasks/{task['task_id']}/cancel")


def tasks(live: Live, query: str = "") -> list[dict[str, Any]]:
    response = live.request("GET", "/v1/tasks" + query)
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()["tasks"]
    return listed


def test_running_first_then_the_line_in_dispatch_order(clean: Live) -> None:
    running = hang(clean)
    batch = submit(clean, prompt="later", max_tokens=4, priority="batch")
    first = submit(clean, prompt="sooner", max_tokens=4)
    second = submit(clean, prompt="soon", max_tokens=8)
    listed = tasks(clean)
    assert [t["task_id"] for t in listed] == [running, first, second, batch]
    head = listed[0]
    assert head["state"] == "running" and head["pool"] == "default"
    assert head["tokens_out"] >= 1 and head["max_tokens"] == 64
    assert head["replica"] is not None and head["run_ms"] is not None
    assert head["queue_position"] is None and head["predicted_start_ms"] is None
    waiting = listed[1:]
    assert [t["queue_position"] for t in waiting] == [0, 1, 2]
    assert [t["priority"] for t in waiting] == ["interactive", "interactive", "batch"]
    starts = [t["predicted_start_ms"] for t in waiting]
    assert all(isinstance(s, int) for s in starts) and starts == sorted(starts)
    assert all(t["state"] == "queued" and t["replica"] is None for t in waiting)
    # The prompt is the stream's business, never the list's.
    assert all("prompt" not in t and "sooner" not in str(t) for t in listed)


def test_state_and_limit_filter_the_list(clean: Live) -> None:
    running = hang(clean)
    queued = submit(clean, prompt="waiting", max_tokens=4)
    assert [t["task_id"] for t in tasks(clean, "?state=running")] == [running]
    assert [t["task_id"] for t in tasks(clean, "?state=queued")] == [queued]
    assert [t["task_id"] for t in tasks(clean, "?state=queued,running&limit=1")] == [running]
    assert [t["task_id"] for t in tasks(clean, "?pool=default&limit=2")] == [running, queued]
    clean.request("POST", f"/v1/tasks/{queued}/cancel")
    cancelled = tasks(clean, "?state=cancelled&limit=1")
    assert [t["task_id"] for t in cancelled] == [queued]
    assert cancelled[0]["error_code"] == "CANCELLED" and cancelled[0]["ended_ms_ago"] >= 0


def test_a_failed_task_shows_its_error(clean: Live) -> None:
    task_id = submit(clean, prompt="[[error-mid:2]] breaks", max_tokens=8)
    frames = parse_frames(clean.request("GET", f"/v1/tasks/{task_id}/stream").text)
    assert frames[-1].event == "error"
    failed = tasks(clean, "?state=failed&limit=1")[0]
    assert failed["task_id"] == task_id and failed["state"] == "failed"
    error = json.loads(frames[-1].data)
    assert failed["error_code"] == error["code"]
    assert failed["error_message"] == error["message"]
    assert failed["tokens_out"] == 2


def test_ended_tasks_latest_first(clean: Live) -> None:
    older = run_to_end(clean, prompt="one", max_tokens=3)
    newer = run_to_end(clean, prompt="two", max_tokens=5)
    listed = tasks(clean, "?state=completed&limit=2")
    assert [t["task_id"] for t in listed] == [newer, older]
    assert [t["tokens_out"] for t in listed] == [5, 3]
    assert listed[0]["ended_ms_ago"] <= listed[1]["ended_ms_ago"]


def test_bad_queries_are_refused_with_every_problem(live: Live) -> None:
    response = live.request("GET", "/v1/tasks?state=done&limit=0&colour=red")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "INVALID_PARAMS"
    assert sorted(p.split(":")[0] for p in body["problems"]) == ["colour", "limit", "state"]
    huge = live.request("GET", "/v1/tasks?limit=" + "9" * 5000)  # past int()'s digit limit
    assert huge.status_code == 400 and "limit" in huge.json()["message"]
    unknown = live.request("GET", "/v1/tasks?pool=nope")
    assert unknown.status_code == 404 and "default" in unknown.json()["message"]


def test_tokens_out_total_counts_ended_and_running_tokens(clean: Live) -> None:
    def total() -> int:
        sets = clean.request("GET", "/v1/replicasets").json()["replicasets"]
        return int(sets[0]["tokens_out_total"])

    before = total()
    run_to_end(clean, prompt="count me", max_tokens=6)
    assert total() == before + 6
    running = hang(clean)  # one token sent, then it holds the slot
    assert total() == before + 6 + 1
    clean.request("POST", f"/v1/tasks/{running}/cancel")
    assert total() == before + 6 + 1  # its token was sent: ending it keeps the count


def _task(task_id: str) -> Task:
    request = TaskRequest(prompt=HANG, max_tokens=4, priority=Priority.INTERACTIVE)
    log = EventLog(limit=8)
    log.append(EventKind.STARTED, {})
    return Task(
        id=task_id,
        request=request,
        fingerprint="",
        log=log,
        submitted_at=0.0,
        queue_position=0,
        predicted_start_ms=0,
    )


def test_the_table_forgets_ended_tasks_but_keeps_their_tokens() -> None:
    table = TaskTable(retention_s=10.0)
    first, second = _task("a"), _task("b")
    for task in (first, second):
        table.add(task)
    first.tokens_out = 3
    table.end(first, TaskState.COMPLETED, EventKind.END, {}, now=1.0)
    second.tokens_out = 4
    table.end(second, TaskState.FAILED, EventKind.ERROR, {"message": "x"}, now=2.0)
    assert [t.id for t in table.recently_ended()] == ["b", "a"]
    table.expire(11.0)  # the first one's retention ran out
    assert [t.id for t in table.recently_ended()] == ["b"]
    assert table.tokens_out_total() == 7


def test_a_watcher_is_not_counted_as_a_reader(clean: Live) -> None:
    task_id = submit(clean, prompt=HANG, max_tokens=8)
    log = clean.actors.queue.log_of(task_id)
    path = f"/v1/tasks/{task_id}/stream"
    with clean.request("GET", path + "?watch=true", stream=True) as watching:
        assert watching.status_code == 200
        lines = watching.iter_lines()
        assert next(line for line in lines if line.startswith(b"event: token"))
        assert log.subscribers == 0  # it reads, and the Queue does not count it
    with clean.request("GET", path, stream=True) as reading:
        lines = reading.iter_lines()  # kept: a dropped iterator closes the connection
        assert next(line for line in lines if line.startswith(b"event: token"))
        assert log.subscribers == 1
    bad = clean.request("GET", path + "?watch=maybe")
    assert bad.status_code == 400 and "watch" in bad.json()["message"]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The token required."""
    with fake_server(
        tmp_path_factory.mktemp("task-list-guarded"), auth={"token": TOKEN, "optional": False}
    ) as server:
        yield server


def test_only_the_stream_takes_the_token_from_the_cookie(guarded: Live) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    task_id = run_to_end_with(guarded, bearer)
    cookie = {"Cookie": f"orchestra_token={TOKEN}"}
    stream = guarded.request("GET", f"/v1/tasks/{task_id}/stream", headers=cookie)
    assert stream.status_code == 200 and parse_frames(stream.text)[-1].event == "end"
    wrong = {"Cookie": "orchestra_token=not-the-token"}
    assert guarded.request("GET", f"/v1/tasks/{task_id}/stream", headers=wrong).status_code == 403
    # Everything else wants the header: a cookie is sent by the browser on its own.
    assert guarded.request("GET", f"/v1/tasks/{task_id}", headers=cookie).status_code == 401
    assert guarded.request("GET", "/v1/tasks", headers=cookie).status_code == 401
    cancel = guarded.request("POST", f"/v1/tasks/{task_id}/cancel", headers=cookie)
    assert cancel.status_code == 401
    # The header wins over the cookie.
    both = {**cookie, "Authorization": "Bearer not-the-token"}
    assert guarded.request("GET", f"/v1/tasks/{task_id}/stream", headers=both).status_code == 403


def run_to_end_with(live: Live, headers: dict[str, str]) -> str:
    body = {"prompt": "hello", "max_tokens": 3}
    response = live.request("POST", "/v1/tasks", json=body, headers=headers)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    stream = live.request("GET", f"/v1/tasks/{task_id}/stream", headers=headers)
    assert parse_frames(stream.text)[-1].event == "end"
    return task_id


def test_health_says_whether_the_token_is_needed(live: Live, guarded: Live) -> None:
    assert guarded.request("GET", "/health").json() == {"status": "ok", "token": "required"}
    assert live.request("GET", "/health").json() == {"status": "ok", "token": "none"}
