"""The HTTP face: a thin QuartTrio app over the actors, one blueprint per face.

::

    create_app
    ├── before every request   correlation id (yours, echoed, or a new one), the auth gate
    ├── tasks blueprint        the data plane (orchestra.http.tasks)
    ├── control blueprint      the control plane (orchestra.http.control)
    ├── catalog blueprint      the model catalog (orchestra.http.catalog)
    ├── artifacts blueprint    the artifact registry (orchestra.http.artifacts)
    ├── models blueprint       the models: list, load, unload (orchestra.http.models)
    ├── openai blueprint       the OpenAI-compatible face (orchestra.http.openai)
    ├── tools blueprint        the agents' tools: http_fetch, search, audit (orchestra.http.tools)
    ├── sdk files blueprint    /sdk/orchestra.js and its .d.ts, open (orchestra.http.static)
    └── error handlers         a Refusal, an HTTP error or a bug: the envelope
                               (orchestra.http.envelope), always

Every response carries ``X-Correlation-Id``; with tracing on, one about a task carries its
``traceparent`` too (``specs/observability.md``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid

from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from orchestra.errors import ErrorCode, Refusal
from orchestra.http.artifacts import artifacts_blueprint
from orchestra.http.auth import STREAM_COOKIE, Gate, stream_credential
from orchestra.http.bodies import json_response
from orchestra.http.catalog import catalog_blueprint
from orchestra.http.context import Actors
from orchestra.http.control import control_blueprint
from orchestra.http.envelope import error_response
from orchestra.http.mcp import mcp_blueprint
from orchestra.http.models import models_blueprint
from orchestra.http.openai import openai_blueprint
from orchestra.http.static import static_blueprint
from orchestra.http.tasks import tasks_blueprint
from orchestra.http.tools import tools_blueprint
from orchestra.obs import logs

log = logging.getLogger(__name__)

_CORRELATION_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
_MAX_BODY = 8 * 1024 * 1024


def create_app(actors: Actors) -> QuartTrio:
    """The QuartTrio app serving the v1 API over ``actors``."""
    app = QuartTrio(__name__, static_folder=None)  # static/ is served by orchestra.http.static
    # An artifact of max_artifact_bytes, sent as base64 in JSON, must fit.
    artifact_body = -(-actors.config.artifacts.max_artifact_bytes // 3) * 4 + 64 * 1024
    app.config["MAX_CONTENT_LENGTH"] = max(_MAX_BODY, artifact_body)
    config = actors.config
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
        authorization = stream_credential(
            request.method,
            request.path,
            request.headers.get("Authorization"),
            request.cookies.get(STREAM_COOKIE),
        )
        g.who = gate.admit(request.path, authorization, request.headers.get(gate.proxy_header))

    @app.get("/health")
    async def liveness() -> Response:
        """Liveness, open without a token (like llama-server's ``/health``), and whether
        the other routes need the token."""
        return json_response({"status": "ok", "token": gate.need})

    @app.after_request
    async def _stamp(response: Response) -> Response:
        # An answer given before the body was read (a 404 for an unknown pool, say) must
        # still consume it, or the next request on the keep-alive connection can hang.
        with contextlib.suppress(Exception):
            await request.get_data(cache=False)
        response.headers["X-Correlation-Id"] = g.get("correlation_id") or str(uuid.uuid4())
        traceparent = g.get("traceparent")
        if traceparent:  # a traced task's (orchestra.http.traced)
            response.headers["traceparent"] = traceparent
        return response

    @app.errorhandler(Refusal)
    async def _refused(exc: Refusal) -> Response:
        return error_response(exc)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = ErrorCode.INVALID_PARAMS if status < 500 else ErrorCode.INTERNAL
        if status == 404:
            code = ErrorCode.NOT_FOUND
        return error_response(Refusal(code, f"{exc.name}: {exc.description}"), status)

    @app.errorhandler(Exception)
    async def _bug(exc: Exception) -> Response:
        log.exception("internal error (correlation id %s)", g.get("correlation_id"))
        return error_response(Refusal(ErrorCode.INTERNAL, "internal error; see the server log"))

    app.register_blueprint(tasks_blueprint(actors))
    app.register_blueprint(control_blueprint(actors))
    app.register_blueprint(catalog_blueprint(actors))
    app.register_blueprint(artifacts_blueprint(actors))
    app.register_blueprint(models_blueprint(actors))
    app.register_blueprint(openai_blueprint(actors))
    app.register_blueprint(tools_blueprint(actors))
    app.register_blueprint(mcp_blueprint(actors))
    app.register_blueprint(static_blueprint())
    return app
