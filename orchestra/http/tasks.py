"""The data plane's routes (``specs/openapi/data.yaml``): submit, stream, status and cancel
of tasks, and sessions.

Handlers validate nothing themselves (Admission does) and hold no state: each turns one
request into one call of an actor's method and its answer into JSON or an SSE stream.
"""

from __future__ import annotations

from typing import Any

import attrs
from quart import Blueprint, Response, request

from orchestra.actors.admission import V1Request, parse_task_request
from orchestra.actors.queue import Queue
from orchestra.errors import ErrorCode, Refusal
from orchestra.http.bodies import count_check, flag_problem, json_response, query_args
from orchestra.http.context import Actors
from orchestra.http.sse import event_stream
from orchestra.http.traced import admitting, answer_for
from orchestra.scheduling.sessions import SessionView
from orchestra.task import Face, TaskState
from orchestra.views import TaskSummary

LIST_DEFAULT = 100
"""Tasks ``GET /v1/tasks`` lists when ``limit`` is not given."""
LIST_MOST = 1000
"""The most it lists."""
LIVE_STATES = (TaskState.RUNNING, TaskState.QUEUED)
"""What it lists when ``state`` is not given."""


def _session_body(view: SessionView) -> dict[str, Any]:
    body = attrs.asdict(view)
    left = body.pop("budget_left")
    wall_s = left.pop("wall_s")
    body["budget_left"] = {**left, "wall_ms": None if wall_s is None else round(wall_s * 1000)}
    return body


def _last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID")
    if raw is None or raw.strip() == "":
        return -1
    try:
        value = int(raw)
    except ValueError:
        raise Refusal(ErrorCode.INVALID_PARAMS, "Last-Event-ID: must be an integer") from None
    if value < -1:
        raise Refusal(ErrorCode.INVALID_PARAMS, "Last-Event-ID: must be -1 or more")
    return value


def _states(value: str) -> str | None:
    names = [name.strip() for name in value.split(",")]
    unknown = [name for name in names if name not in set(TaskState)]
    if unknown or not value:
        return f"must be states among {', '.join(TaskState)}, comma-separated"
    return None


def task_list_body(listed: list[tuple[str, TaskSummary]], limit: int) -> dict[str, Any]:
    """The body of ``GET /v1/tasks``: the running tasks, then the waiting ones (soonest
    predicted start first), then those that ended (latest first), each with its pool."""

    def order(entry: tuple[str, TaskSummary]) -> tuple[int, int]:
        task = entry[1]
        if task.state is TaskState.RUNNING:
            return 0, 0  # the sort is stable: each pool's dispatch order stays
        if task.state is TaskState.QUEUED:
            return 1, task.predicted_start_ms or 0
        return 2, task.ended_ms_ago or 0

    ordered = sorted(listed, key=order)[:limit]
    return {"tasks": [{**attrs.asdict(task), "pool": pool} for pool, task in ordered]}


def _unknown(task_id: str) -> Refusal:
    return Refusal(ErrorCode.NOT_FOUND, f"no task {task_id!r}")


def tasks_blueprint(actors: Actors) -> Blueprint:
    """The data plane's routes over ``actors``."""
    routes = Blueprint("tasks", __name__)
    models, admission = actors.models, actors.admission
    limits = actors.config.admission
    tracing = actors.tracing

    def queue_of(task_id: str) -> Queue:
        queue = models.find(task_id)
        if queue is None:
            raise _unknown(task_id)
        return queue

    def session_queue(session_id: str) -> Queue:
        queue = models.find_session(session_id)
        if queue is None:
            raise Refusal(ErrorCode.NOT_FOUND, f"no session {session_id!r}")
        return queue

    @routes.post("/v1/tasks")
    async def submit_task() -> Response:
        body = await request.get_data(cache=False)
        assert isinstance(body, bytes)
        with admitting(tracing, "/v1/tasks"):
            _, admitted, route = await admission.admit_with(
                lambda: V1Request(parse_task_request(body, limits)), Face.V1
            )
        stream_url = f"/v1/tasks/{admitted.task_id}/stream"
        queue = models.pool(route.id).queue
        answer_for(trace := queue.trace_of(admitted.task_id))  # an earlier task's, if a repeat
        if "text/event-stream" in request.headers.get("Accept", ""):
            subscription = queue.subscribe(admitted.task_id)
            if subscription is not None:
                # Submit and stream in one round trip: the same events, ids and resume as
                # GET stream_url, which a client that loses this stream reconnects to.
                response = event_stream(subscription, trace)
                response.headers["X-Task-Id"] = admitted.task_id
                response.headers["Location"] = stream_url
                return response
        return json_response(
            {
                "task_id": admitted.task_id,
                "queue_position": admitted.queue_position,
                "predicted_start_ms": admitted.predicted_start_ms,
                "stream_url": stream_url,
            },
            202,
        )

    @routes.get("/v1/tasks")
    async def list_tasks() -> Response:
        given = query_args(
            {"state": _states, "pool": lambda _: None, "limit": count_check(LIST_MOST)}
        )
        raw = given.get("state")
        states = LIVE_STATES if raw is None else tuple(TaskState(s.strip()) for s in raw.split(","))
        limit = int(given.get("limit", LIST_DEFAULT))
        named = given.get("pool")
        pools = list(models) if named is None else [actors.pool(named)]
        listed = [(p.id, task) for p in pools for task in p.queue.task_list(states, limit)]
        return json_response(task_list_body(listed, limit))

    @routes.get("/v1/tasks/<task_id>")
    async def task_status(task_id: str) -> Response:
        view = queue_of(task_id).view(task_id)
        if view is None:
            raise _unknown(task_id)
        return json_response(attrs.asdict(view))

    @routes.post("/v1/tasks/<task_id>/cancel")
    async def cancel_task(task_id: str) -> Response:
        state = await queue_of(task_id).cancel(task_id)
        if state is None:
            raise _unknown(task_id)
        return json_response({"task_id": task_id, "state": str(state)})

    @routes.get("/v1/tasks/<task_id>/stream")
    async def stream_task(task_id: str) -> Response:
        watch = query_args({"watch": flag_problem}).get("watch", "false") in ("true", "1")
        queue, start = queue_of(task_id), _last_event_id() + 1
        subscription = queue.subscribe(task_id, start, counted=not watch)
        assert subscription is not None  # nothing ran in between: the task is still known
        answer_for(trace := queue.trace_of(task_id))
        return event_stream(subscription, trace, start)

    @routes.get("/v1/sessions/<session_id>")
    async def session_status(session_id: str) -> Response:
        view = session_queue(session_id).session_view(session_id)
        if view is None:
            raise Refusal(ErrorCode.NOT_FOUND, f"no session {session_id!r}")
        return json_response(_session_body(view))

    @routes.delete("/v1/sessions/<session_id>")
    async def delete_session(session_id: str) -> Response:
        deleted = await session_queue(session_id).delete_session(session_id)
        if deleted is None:
            raise Refusal(ErrorCode.NOT_FOUND, f"no session {session_id!r}")
        view, erased = deleted
        return json_response({**_session_body(view), "deleted": True, "kv_erased": erased})

    return routes
