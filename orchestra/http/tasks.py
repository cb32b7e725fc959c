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
from orchestra.http.bodies import json_response
from orchestra.http.context import Actors
from orchestra.http.sse import event_stream
from orchestra.http.traced import admitting, answer_for
from orchestra.scheduling.sessions import SessionView
from orchestra.task import Face


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
        queue, start = queue_of(task_id), _last_event_id() + 1
        subscription = queue.subscribe(task_id, start)
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
