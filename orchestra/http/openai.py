"""The OpenAI-compatible face (``specs/openapi/openai.yaml``): ``POST /v1/chat/completions``,
``POST /v1/completions`` and ``POST /v1/embeddings`` over the same Admission and Queues as
``POST /v1/tasks``; ``model`` names the pool (:meth:`Models.route`).

Each request is a task: it waits in the same bounded line (a full one is 429 with
``Retry-After`` and ``retry-after-ms``), its id is in ``X-Task-Id`` (``GET /v1/tasks/{id}``
shows it, ``POST /v1/tasks/{id}/cancel`` ends it: its OpenAI stream then ends with an error
chunk whose code is ``CANCELLED``), and its answer is read from the same event log as its
v1 stream. An OpenAI stream cannot be resumed, so a client that leaves (a stream or a
non-streamed answer) cancels its task at once, which frees the engine slot.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import attrs
import trio
from quart import Blueprint, Response, g, request

from orchestra import __version__
from orchestra.actors import fields
from orchestra.actors.admission import V1Request
from orchestra.actors.models import Models
from orchestra.actors.pools import Pool
from orchestra.engine.protocol import Embeddings
from orchestra.errors import ErrorCode, Refusal
from orchestra.events import EventKind, Subscription
from orchestra.http.bodies import json_response
from orchestra.http.context import Actors
from orchestra.http.openai_answers import Answer
from orchestra.http.openai_embeddings import embeddings_body, parse_embeddings
from orchestra.http.openai_requests import OpenAIRequest, Parser, parse_chat, parse_completion
from orchestra.http.sse import KEEPALIVE_S, sse_response
from orchestra.http.traced import admitting
from orchestra.obs.tracing import TaskTrace, reader_done
from orchestra.task import Embed, Endpoint, Face, TaskRequest

_CANCEL_TIMEOUT_S = 5.0


def openai_blueprint(actors: Actors) -> Blueprint:
    """The OpenAI face's routes over ``actors``."""
    routes = Blueprint("openai", __name__)
    admission, models = actors.admission, actors.models
    limits = actors.config.admission
    fingerprint = f"orchestra-{__version__}"
    tracing = actors.tracing

    async def answer(endpoint: Endpoint, parser: Parser) -> Response:
        raw = await request.get_data(cache=False)
        assert isinstance(raw, bytes)

        def parse() -> OpenAIRequest:
            return parser(fields.load_object(raw), limits)

        with admitting(tracing, request.path):
            parsed, admitted, route = await admission.admit_with(parse, Face.OPENAI)
        pool = models.pool(route.id)
        task_id = g.task_id = admitted.task_id  # on the answer, an error one too
        subscription = pool.queue.subscribe(task_id)
        if subscription is None:  # forgotten already: only when retention is 0
            raise Refusal(ErrorCode.NOT_FOUND, f"task {task_id!r} ended and was forgotten")

        async def cancel(task_id: str) -> None:
            """Cancel a task whose client left; runs even while the handler is cancelled."""
            with trio.CancelScope(shield=True), trio.move_on_after(_CANCEL_TIMEOUT_S):
                await pool.queue.cancel(task_id)

        reply = Answer(
            endpoint,
            task_id,
            models.answer_name(pool, parsed.model),
            int(time.time()),
            include_usage=parsed.include_usage,
            fingerprint=fingerprint,
        )
        if parsed.stream:
            trace = pool.queue.trace_of(task_id)
            response = await _stream(reply, subscription, cancel, trace)
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

    @routes.post("/v1/embeddings")
    async def embeddings() -> Response:
        raw = await request.get_data(cache=False)
        assert isinstance(raw, bytes)
        asked = parse_embeddings(raw)
        pool = _embedding_pool(models, asked.model)
        task = TaskRequest(
            prompt=Embed(asked.inputs), max_tokens=1, face=Face.OPENAI, model_ref=pool.id
        )
        with admitting(tracing, request.path):
            _, admitted, _ = await admission.admit_with(lambda: V1Request(task), Face.OPENAI)
        task_id = g.task_id = admitted.task_id
        subscription = pool.queue.subscribe(task_id)
        if subscription is None:
            raise Refusal(ErrorCode.NOT_FOUND, f"task {task_id!r} ended and was forgotten")
        end = await _end_of(subscription, pool.queue.cancel, task_id)
        result = Embeddings(
            tuple(tuple(v) for v in end.get("embeddings", ())), int(end.get("tokens_in") or 0)
        )
        name = models.answer_name(pool, asked.model or pool.id)
        response = json_response(embeddings_body(name, result, asked.encoding_format))
        response.headers["X-Task-Id"] = task_id
        return response

    return routes


def _embedding_pool(models: Models, name: str | None) -> Pool:
    """The pool an embeddings request names, when it serves embeddings."""
    try:
        pool = models.route(name)
    except Refusal as exc:
        raise attrs.evolve(exc, param="model") from None
    if not pool.spec.embeddings and not pool.spec.fixed:
        served = [p.id for p in models if p.spec.embeddings]
        hint = f" (these do: {', '.join(served)})" if served else ""
        raise Refusal(
            ErrorCode.INVALID_PARAMS,
            f"model {pool.id!r} does not serve embeddings: set embeddings = true in "
            f"[models.{pool.id}]{hint}",
            problems=(f"model: {pool.id!r} does not serve embeddings{hint}",),
            param="model",
        )
    return pool


async def _end_of(
    subscription: Subscription, cancel: Callable[[str], Any], task_id: str
) -> Mapping[str, Any]:
    """The data of the task's ``end`` event; its ``error`` event raised as a refusal. A
    client that leaves first cancels the task."""
    finished = False
    try:
        with subscription:
            while True:
                for event in subscription.take_events():
                    if event.kind is EventKind.END:
                        finished = True
                        return event.data
                    if event.kind is EventKind.ERROR:
                        finished = True
                        raise Refusal(
                            ErrorCode(event.data["code"]),
                            str(event.data.get("message", "")),
                            retriable=bool(event.data.get("retriable", False)),
                        )
                await subscription.wait()
    finally:
        if not finished:
            with trio.CancelScope(shield=True), trio.move_on_after(_CANCEL_TIMEOUT_S):
                await cancel(task_id)


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
    reply: Answer,
    subscription: Subscription,
    cancel: Callable[[str], Any],
    trace: TaskTrace | None = None,
) -> Response:
    """The answer as OpenAI's stream; a client that leaves before its end cancels the task.
    With the task's ``trace``, the stream is an ``orchestra.stream`` span.

    The body is started here, before the response is handed to Quart: a client gone before
    Quart reads the body (the body is then never iterated, only dropped) still has its task
    cancelled, by the body's ``finally`` when Trio finalizes it.
    """

    async def frames() -> AsyncGenerator[bytes, None]:
        finished = False
        span = None if trace is None else trace.reader("openai")
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
            if span is not None:
                reader_done(span, finished=finished)
            if not finished:
                await cancel(reply.task_id)

    body = frames()
    await body.__anext__()
    return sse_response(body)
