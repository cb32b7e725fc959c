"""The HTTP face's part of tracing (:mod:`orchestra.obs.tracing`): a submission's trace is
opened around its admission, continuing the client's ``traceparent``, and every answer
about a traced task carries the task's own ``traceparent`` (set in ``g``, written by the
app's ``after_request`` with ``X-Correlation-Id``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from quart import g, request

from orchestra.obs.tracing import TaskTrace, Tracing


@contextlib.contextmanager
def admitting(tracing: Tracing, route: str) -> Iterator[TaskTrace | None]:
    """Trace the admission of the request being served (nothing when tracing is off)."""
    with tracing.admission(request.headers, route) as trace:
        if trace is not None:
            g.traceparent = trace.traceparent
        yield trace


def answer_for(trace: TaskTrace | None) -> None:
    """The answer being made is about the task of ``trace``: it carries its traceparent."""
    if trace is not None:
        g.traceparent = trace.traceparent
