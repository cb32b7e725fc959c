"""The HTTP face: a thin QuartTrio app that turns requests into actor calls.

Handlers validate nothing themselves (Admission does), hold no state, and answer every
error with the one envelope of DESIGN §2. Every response carries ``X-Correlation-Id``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from . import logs
from .admission import Admission
from .auth import Gate
from .catalog import Catalog
from .config import Config
from .errors import ApiError, ErrorCode
from .events import EventLog
from .http_control import add_control_routes
from .http_util import json_response
from .metrics import Metrics
from .pool_control import PoolControl
from .queue import Queue
from .sessions import SessionView
from .supervisor import Supervisor

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
"""An SSE comment is sent after this long without events, so proxies keep the stream."""
_CORRELATION_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
_MAX_BODY = 8 * 1024 * 1024


@attrs.frozen
class Actors:
    """What the HTTP face talks to."""

    config: Config
    admission: Admission
    queue: Queue
    supervisor: Supervisor
    control: PoolControl
    catalog: Catalog
    metrics: Metrics


def error_response(exc: ApiError) -> Response:
    """The error envelope of DESIGN §2 for ``exc``."""
    body: dict[str, Any] = {
        "code": str(exc.code),
        "message": exc.message,
        "retriable": exc.retriable,
        "correlation_id": g.get("correlation_id", ""),
    }
    if exc.retry_after_ms is not None:
        body["retry_after_ms"] = exc.retry_after_ms
    if exc.policy_label is not None:
        body["policy_label"] = exc.policy_label
    if exc.problems:
        body["problems"] = list(exc.problems)
    if exc.details is not None:
        body["details"] = dict(exc.details)
    response = json_response(body, exc.code.http_status)
    for name, value in exc.headers.items():
        response.headers[name] = value
    return response


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
        raise ApiError(ErrorCode.INVALID_PARAMS, "Last-Event-ID: must be an integer") from None
    if value < -1:
        raise ApiError(ErrorCode.INVALID_PARAMS, "Last-Event-ID: must be -1 or more")
    return value


def create_app(actors: Actors) -> QuartTrio:
    """The QuartTrio app serving the v1 API over ``actors``."""
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = _MAX_BODY
    queue, admission, config = actors.queue, actors.admission, actors.config
    auth = config.auth
    gate = Gate(
        token=auth.token,
        required=not (auth.optional and config.bind_is_loopback),
        trust_proxy=auth.trust_proxy_auth,
        proxy_header=auth.proxy_user_header,
    )

    @app.before_request
    async def _correlate_and_authorize() -> None:
        sent = request.headers.get("X-Correlation-Id")
        g.correlation_id = sent if sent and _CORRELATION_RE.match(sent) else str(uuid.uuid4())
        logs.correlation_id.set(g.correlation_id)
        g.who = gate.admit(
            request.path,
            request.headers.get("Authorization"),
            request.headers.get(gate.proxy_header),
        )

    @app.get("/health")
    async def liveness() -> Response:
        """Liveness only, open without a token (like llama-server's ``/health``)."""
        return json_response({"status": "ok"})

    @app.after_request
    async def _stamp(response: Response) -> Response:
        # An answer given before the body was read (a 404 for an unknown pool, say) must
        # still consume it, or the next request on the keep-alive connection can hang.
        with contextlib.suppress(Exception):
            await request.get_data(cache=False)
        response.headers["X-Correlation-Id"] = g.get("correlation_id") or str(uuid.uuid4())
        return response

    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Response:
        return error_response(exc)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = ErrorCode.INVALID_PARAMS if status < 500 else ErrorCode.INTERNAL
        if status == 404:
            code = ErrorCode.NOT_FOUND
        response = error_response(ApiError(code, f"{exc.name}: {exc.description}"))
        response.status_code = status
        return response

    @app.errorhandler(Exception)
    async def _bug(exc: Exception) -> Response:
        log.exception("internal error (correlation id %s)", g.get("correlation_id"))
        return error_response(ApiError(ErrorCode.INTERNAL, "internal error; see the server log"))

    @app.post("/v1/tasks")
    async def submit_task() -> Response:
        body = await request.get_data(cache=False)
        assert isinstance(body, bytes)
        admitted = await admission.admit(body)
        stream_url = f"/v1/tasks/{admitted.task_id}/stream"
        event_log = queue.log_of(admitted.task_id)
        if "text/event-stream" in request.headers.get("Accept", "") and event_log is not None:
            # Submit and stream in one round trip: the same events, ids and resume as
            # GET stream_url, which a client that loses this stream reconnects to.
            response = _event_stream(event_log, 0)
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

    def _unknown(task_id: str) -> ApiError:
        return ApiError(ErrorCode.NOT_FOUND, f"no task {task_id!r}")

    @app.get("/v1/tasks/<task_id>")
    async def task_status(task_id: str) -> Response:
        view = queue.view(task_id)
        if view is None:
            raise _unknown(task_id)
        return json_response(attrs.asdict(view))

    @app.post("/v1/tasks/<task_id>/cancel")
    async def cancel_task(task_id: str) -> Response:
        state = await queue.cancel(task_id)
        if state is None:
            raise _unknown(task_id)
        return json_response({"task_id": task_id, "state": str(state)})

    @app.get("/v1/tasks/<task_id>/stream")
    async def stream_task(task_id: str) -> Response:
        event_log = queue.log_of(task_id)
        if event_log is None:
            raise _unknown(task_id)
        return _event_stream(event_log, _last_event_id() + 1)

    @app.get("/v1/sessions/<session_id>")
    async def session_status(session_id: str) -> Response:
        view = queue.session_view(session_id)
        if view is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no session {session_id!r}")
        return json_response(_session_body(view))

    @app.delete("/v1/sessions/<session_id>")
    async def delete_session(session_id: str) -> Response:
        deleted = await queue.delete_session(session_id)
        if deleted is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no session {session_id!r}")
        view, erased = deleted
        return json_response({**_session_body(view), "deleted": True, "kv_erased": erased})

    def _event_stream(event_log: EventLog, start: int) -> Response:
        """An SSE response of ``event_log`` from event ``start`` on, with keep-alives."""

        async def frames() -> AsyncIterator[bytes]:
            event_log.add_subscriber()
            try:
                index = start
                while True:
                    events = event_log.events_from(index)
                    if events:
                        index += len(events)
                        yield b"".join(event.wire for event in events)
                        continue
                    if event_log.closed:
                        return
                    with trio.move_on_after(KEEPALIVE_S) as waited:
                        await event_log.wait_beyond(index)
                    if waited.cancelled_caught:
                        yield b": keepalive\n\n"
            finally:
                event_log.remove_subscriber()

        response = Response(
            frames(),
            content_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        response.timeout = None
        return response

    add_control_routes(app, actors)
    return app
