"""A task's stream as Server-Sent Events: every event of its log from a given one on, as
the log encoded it, with a comment line when nothing was sent for ``KEEPALIVE_S``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio
from quart import Response

from orchestra.events import Subscription
from orchestra.obs.tracing import TaskTrace, reader_done

KEEPALIVE_S = 15.0
"""An SSE comment is sent after this long without events, so proxies keep the stream."""


def event_stream(
    subscription: Subscription, trace: TaskTrace | None = None, start: int = 0
) -> Response:
    """An SSE response that reads ``subscription`` (from event ``start``) until the task's
    log is closed and read; with the task's ``trace``, as an ``orchestra.stream`` span.

    The subscription counts as a reader while the response is being sent (the Queue
    cancels a running task whose readers all left and none came back in time).
    """

    async def frames() -> AsyncIterator[bytes]:
        span = None if trace is None else trace.reader("sse", start)
        finished = False
        try:
            with subscription:
                while True:
                    chunk = subscription.take()
                    if chunk:
                        yield chunk
                        continue
                    if subscription.finished:
                        finished = True
                        return
                    with trio.move_on_after(KEEPALIVE_S) as waited:
                        await subscription.wait()
                    if waited.cancelled_caught:
                        yield b": keepalive\n\n"
        finally:
            if span is not None:
                reader_done(span, finished=finished)

    return sse_response(frames())


def sse_response(frames: AsyncIterator[bytes]) -> Response:
    """A ``text/event-stream`` response sending ``frames`` as they come, for as long as
    they take (no response timeout), unbuffered by proxies."""
    response = Response(
        frames,
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.timeout = None
    return response
