"""The OpenAI-compatible face (``specs/openapi/openai.yaml``): ``POST /v1/chat/completions``
and ``POST /v1/completions`` over the same Admission and Queue as ``POST /v1/tasks``.

Each request is a task: it waits in the same bounded line (a full one is 429 with
``Retry-After`` and ``retry-after-ms``), its id is in ``X-Task-Id`` (``GET /v1/tasks/{id}``
shows it, ``POST /v1/tasks/{id}/cancel`` ends it: its OpenAI stream then ends with an error
chunk whose code is ``CANCELLED``), and its answer is read from the same event log as its
v1 stream. An OpenAI stream cannot be resumed, so a client that leaves (a stream or a
non-streamed answer) cancels its task at once, which frees the engine slot.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import trio
from quart import Blueprint, Response, g, request

from orchestra import __version__
from orchestra.actors import fields
from orchestra.errors import ErrorCode, Refusal
from orchestra.events import Subscription
from orchestra.http.bodies import json_response
from orchestra.http.context import Actors
from orchestra.http.openai_answers import Answer
from orchestra.http.openai_requests import OpenAIRequest, Parser, parse_chat, parse_completion
from orchestra.http.sse import KEEPALIVE_S, sse_response
from orchestra.task import Endpoint, Face

DEFAULT_POOL = "default"
_CANCEL_TIMEOUT_S = 5.0


def openai_blueprint(actors: Actors) -> Blueprint:
    """The OpenAI face's routes over ``actors``."""
    routes = Blueprint("openai", __name__)
    queue, admission, control = actors.queue, actors.admission, actors.control
    limits = actors.config.admission
    fingerprint = f"orchestra-{__version__}"

    def served_model(asked: str) -> str:
        """The model a request names, as answers name it: the pool's model (by its catalog
        id, or the pool's name); any name while the pool's model has no catalog id."""
        served = control.model_id
        if served is None or asked in (served, DEFAULT_POOL):
            return served or asked
        raise Refusal(
            ErrorCode.NOT_FOUND,
            f"model {asked!r} is not served here; GET /v1/models lists {served!r}",
            problems=(f"model: {asked!r} is not served (the model is {served!r})",),
            param="model",
        )

    async def cancel(task_id: str) -> None:
        """Cancel a task whose client left; runs even while the handler is cancelled."""
        with trio.CancelScope(shield=True), trio.move_on_after(_CANCEL_TIMEOUT_S):
            await queue.cancel(task_id)

    async def answer(endpoint: Endpoint, parser: Parser) -> Response:
        raw = await request.get_data(cache=False)
        assert isinstance(raw, bytes)
        asked: list[str] = []

        def parse() -> OpenAIRequest:
            parsed = parser(fields.load_object(raw), limits)
            asked.append(served_model(parsed.model))
            return parsed

        parsed, admitted = await admission.admit_with(parse, Face.OPENAI)
        task_id = g.task_id = admitted.task_id  # on the answer, an error one too
        subscription = queue.subscribe(task_id)
        if subscription is None:  # forgotten already: only when retention is 0
            raise Refusal(ErrorCode.NOT_FOUND, f"task {task_id!r} ended and was forgotten")
        reply = Answer(
            endpoint,
            task_id,
            asked[0],
            int(time.time()),
            include_usage=parsed.include_usage,
            fingerprint=fingerprint,
        )
        if parsed.stream:
            response = await _stream(reply, subscription, cancel)
        else:
            response = await _whole(reply, subscription, cancel)
        response.headers["X-Task-Id"] = task_id
        return response

    @routes.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        return await answer(Endpoint.CHAT, parse_chat)

    @routes.post("/v1/completions")
    async def completions() -> Response:
        return await answer(Endpoint.COMPLETION, parse_completion)

    return routes


async def _whole(
    reply: Answer, subscription: Subscription, cancel: Callable[[str], Any]
) -> Response:
    """Wait for the task's end and answer with the whole completion (or its error)."""
    finished = False
    try:
        with subscription:
            while not subscription.finished:
                await subscription.wait()
                for event in subscription.take_events():
                    reply.chunk_for(event)
        finished = True
    finally:
        if not finished:
            await cancel(reply.task_id)
    if reply.error is not None:
        raise reply.refusal()
    return json_response(reply.whole())


async def _stream(
    reply: Answer, subscription: Subscription, cancel: Callable[[str], Any]
) -> Response:
    """The answer as OpenAI's stream; a client that leaves before its end cancels the task.

    The body is started here, before the response is handed to Quart: a client gone before
    Quart reads the body (the body is then never iterated, only dropped) still has its task
    cancelled, by the body's ``finally`` when Trio finalizes it.
    """

    async def frames() -> AsyncGenerator[bytes, None]:
        finished = False
        try:
            with subscription:
                yield b""  # started: from here on, leaving cancels the task
                # The role chunk goes with the first piece, as the engine sends its own: a
                # write while the engine evaluates the prompt takes CPU from it.
                opening = reply.opening()
                while True:
                    chunk = b"".join(reply.chunk_for(e) for e in subscription.take_events())
                    if chunk:
                        yield opening + chunk
                        opening = b""
                    if subscription.finished:
                        finished = True
                        return
                    with trio.move_on_after(KEEPALIVE_S) as waited:
                        await subscription.wait()
                    if waited.cancelled_caught:
                        yield b": keepalive\n\n"
        finally:
            if not finished:
                await cancel(reply.task_id)

    body = frames()
    await body.__anext__()
    return sse_response(body)
