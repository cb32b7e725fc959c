"""One ``/v1/chat/completions`` request (also ``/chat/completions``): its body turned into a
:class:`~.completion.Job` and the face that writes its answer, as llama-server's
``oaicompat_chat_params_parse`` and ``handle_completions_impl`` (server-common.cpp,
server-context.cpp) do.

The body's ``messages`` (and ``tools``) are rendered by :mod:`.template`; the rest of the
body is passed on as in the real engine, so ``max_tokens``/``max_completion_tokens`` (or
``n_predict``), ``seed``, ``temperature``, ``id_slot`` and ``cache_prompt`` mean what they
mean on ``/completion``, and the rendered prompt's fault directives act as there. The words
are those ``/completion`` generates for the rendered prompt and seed, so ``/apply-template``
then ``/completion`` gives the same text as the chat endpoint.

``stop`` (a string or a list) ends the answer at the first stop string, cut off, with
``finish_reason: "stop"``; text that may be the start of a stop string is held back from the
stream (and, as in the engine, is lost from the stream when the token budget ends there).
Running out of tokens is ``finish_reason: "length"``. A request with ``tools`` whose last
user message holds ``[[call:NAME]]`` answers with a tool call (:mod:`.toolcall`).
``response_format`` is checked, not enforced.
"""

from __future__ import annotations

from typing import Any

import attrs

from .asgi import error_body
from .completion import Face, Job, accept
from .oai import Reply
from .template import ChatRequestError, render, tool_choice, tools
from .toolcall import ToolCallReply, wanted_call


def stop_strings(body: dict[str, Any]) -> list[str]:
    """``stop`` as a list of non-empty strings (a single string is a list of one)."""
    stop = body.get("stop")
    given = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    return [s for s in given if isinstance(s, str) and s]


def partial_stop(text: str, stop: str) -> int | None:
    """Where a suffix of ``text`` that begins ``stop`` starts (``string_find_partial_stop``)."""
    for length in range(min(len(text), len(stop)), 0, -1):
        if text.endswith(stop[:length]):
            return len(text) - length
    return None


@attrs.define
class TextReply(Reply):
    """A text answer: content deltas, cut at the first stop string."""

    stops: list[str] = attrs.field(factory=list)
    generated: str = attrs.field(default="", init=False)
    n_sent: int = attrs.field(default=0, init=False)
    """Characters of ``generated`` already streamed."""
    stopped: bool = attrs.field(default=False, init=False)
    """A stop string was found (``finish_reason: "stop"``)."""

    @property
    def done(self) -> bool:
        return self.stopped or self.n_decoded >= self.job.n_predict

    @property
    def text(self) -> str:
        return self.generated

    def token(self, word: str, piece: str) -> bytes:
        """As ``process_token`` (server-context.cpp): look for a whole stop string in the
        unsent text near its end, else hold back a possible start of one."""
        self.n_decoded += 1
        self.generated += piece
        unsent = self.generated[self.n_sent :]
        send = True
        found = [
            (pos, stop)
            for stop in self.stops
            if (pos := unsent.find(stop, max(len(unsent) - len(stop) - len(piece), 0))) >= 0
        ]
        if found:
            pos, _ = min(found)
            self.generated = self.generated[: self.n_sent + pos]
            self.stopped = True
        else:
            send = all(partial_stop(unsent, stop) is None for stop in self.stops)
        content = self.generated[self.n_sent :] if send else ""
        self.n_sent += len(content)
        if not self.job.stream:
            return b""
        return self.deltas(*([{"content": content}] if content else []))

    def finish_reason(self) -> str:
        return "stop" if self.stopped else "length"

    def message(self) -> dict[str, Any]:
        return {"role": "assistant", "content": self.generated}


def accept_chat(body: Any, slot_ctx: int, model: str) -> tuple[Job, Face] | tuple[int, bytes]:
    """Validate a chat body: the job to run and the face of its answer, or the error
    response to send."""
    try:
        prompt = render(body)
        choice = tool_choice(body)
    except ChatRequestError as error:
        return error.status, error_body(error.status, error.message)
    assert isinstance(body, dict)  # render checked it
    params = {**body, "prompt": prompt, "stop": stop_strings(body)}
    job = accept(params, slot_ctx)
    if isinstance(job, tuple):
        return job
    options = body.get("stream_options")
    usage = isinstance(options, dict) and options.get("include_usage") is True
    offered = tools(body) if choice != "none" else []
    call = wanted_call(body["messages"], offered, required=choice == "required")
    if call is not None:
        return job, ToolCallReply(job, model, usage, tool=call)
    return job, TextReply(job, model, usage, stops=params["stop"])
