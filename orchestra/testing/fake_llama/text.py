"""One ``/v1/completions`` request: OpenAI's text completion, as llama-server's
``handle_completions_oai`` writes it (``to_json_oaicompat`` in server-task.cpp).

The body is a ``/completion`` body (``prompt``, ``max_tokens`` or ``n_predict``, ``seed``,
``temperature``, ``id_slot``, ``cache_prompt``, the fault directives) with ``stop`` strings
handled as on the chat endpoint (:class:`~.chat.TextReply`: cut, held back, ``finish_reason:
"stop"``); the words are those ``/completion`` generates for the same prompt and seed.

Streamed, each token is a chunk ``{"choices": [{"text", "index": 0, "logprobs": null,
"finish_reason": null}], "object": "text_completion", ...}`` (no chunk for a piece held
back), then one chunk with ``text: ""``, the ``finish_reason``, ``usage`` and ``timings``
(whatever ``stream_options`` says, as the engine does), then ``data: [DONE]``. Not
streamed, one object whose choice has the whole ``text``. Every object carries the chat
endpoint's envelope (``id`` ``chatcmpl-...``, as the engine writes it for this endpoint too).
"""

from __future__ import annotations

from typing import Any

import attrs

from .asgi import dumps
from .chat import TextReply, stop_strings
from .completion import Face, Job, accept
from .oai import DONE, sse


@attrs.define
class TextCompletionReply(TextReply):
    """A text completion's answer: ``text`` chunks, cut at the first stop string."""

    def envelope(self, obj: str) -> dict[str, Any]:
        return super().envelope("text_completion")

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        """A ``text_completion`` object with one choice, whose ``text`` is the delta's."""
        choice = {
            "text": delta.get("content", ""),
            "index": 0,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        return {"choices": [choice], **self.envelope("text_completion")}

    def deltas(self, *deltas: dict[str, Any]) -> bytes:
        """A chunk per delta (no role chunk: text completions have none)."""
        return b"".join(sse(self.chunk(delta)) for delta in deltas)

    def final(self, slot: int, timings: dict[str, Any]) -> bytes:
        """The last chunk (finish, ``usage``, ``timings``) and ``[DONE]``, or the whole
        ``text_completion``."""
        self.cache_n = timings["cache_n"]
        content = {} if self.job.stream else {"content": self.generated}
        last = {**self.chunk(content, self.finish_reason()), "usage": self.usage()}
        last["timings"] = timings
        return sse(last) + DONE if self.job.stream else dumps(last)


def accept_text_completion(
    body: Any, slot_ctx: int, model: str
) -> tuple[Job, Face] | tuple[int, bytes]:
    """Validate a ``/v1/completions`` body: the job to run and the face of its answer, or
    the error response to send."""
    params = {**body, "stop": stop_strings(body)} if isinstance(body, dict) else body
    job = accept(params, slot_ctx)
    if isinstance(job, tuple):
        return job
    return job, TextCompletionReply(job, model, stops=params["stop"])
