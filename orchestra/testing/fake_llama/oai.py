"""The OpenAI-shaped objects of ``/v1/chat/completions``, as llama-server writes them
(``server_task_result_cmpl_final::to_json_oaicompat_chat[_stream]`` and
``server_task_result_cmpl_partial::to_json_oaicompat_chat`` in server-task.cpp).

Every object of one request carries the same ``id`` (``chatcmpl-`` and 32 random letters
and digits, as ``gen_chatcmplid``), ``created`` (Unix seconds), ``model`` (the model path,
llama-server's model name without ``--alias``), ``system_fingerprint`` (the build info,
``b0-unknown`` for a build without git) and ``object`` (``chat.completion``, or
``chat.completion.chunk`` in a stream).

A stream is ``data: {json}`` frames: a first chunk whose delta is
``{"role":"assistant","content":null}`` (sent with the first token), a chunk per delta,
then a chunk with ``delta: {}`` and the ``finish_reason``, then, with
``stream_options.include_usage``, a chunk with ``choices: []`` and ``usage``; the last of
these carries ``timings``; then ``data: [DONE]``. :class:`Reply` is what the faces of
:mod:`.chat` and :mod:`.toolcall` share: the envelope, the stream's chunks and the end.
"""

from __future__ import annotations

import secrets
import string
import time
from typing import Any, Final

import attrs

from .asgi import dumps
from .completion import Job

BUILD_INFO: Final = "b0-unknown"
"""``system_fingerprint``, as ``build_info`` in ``/props``."""
DONE: Final = b"data: [DONE]\n\n"
"""The end of an OpenAI-compatible stream (not of ``/completion``'s)."""
_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase


def random_string() -> str:
    """32 random letters and digits, as the engine's ``random_string``."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(32))


def sse(value: Any) -> bytes:
    """One ``data:`` frame."""
    return b"data: " + dumps(value) + b"\n\n"


@attrs.define
class Reply:
    """The OpenAI side of one chat generation; subclasses say what the message is."""

    job: Job
    model: str
    include_usage: bool = False
    id: str = attrs.field(factory=lambda: "chatcmpl-" + random_string())
    created: int = attrs.field(factory=lambda: int(time.time()))
    n_decoded: int = attrs.field(default=0, init=False)
    cache_n: int = attrs.field(default=0, init=False)
    """Prompt tokens taken from the slot's cache (set before :meth:`final`)."""

    # -- what a subclass says ----------------------------------------------------------------

    def finish_reason(self) -> str:
        """``stop``, ``length`` or ``tool_calls``."""
        raise NotImplementedError

    def message(self) -> dict[str, Any]:
        """The whole ``message`` of a non-streamed answer."""
        raise NotImplementedError

    # -- the shapes ----------------------------------------------------------------------------

    def envelope(self, obj: str) -> dict[str, Any]:
        """The fields every object of this request carries."""
        return {
            "created": self.created,
            "id": self.id,
            "model": self.model,
            "system_fingerprint": BUILD_INFO,
            "object": obj,
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        """A ``chat.completion.chunk`` with one choice."""
        choice = {"finish_reason": finish_reason, "index": 0, "delta": delta}
        return {"choices": [choice], **self.envelope("chat.completion.chunk")}

    def deltas(self, *deltas: dict[str, Any]) -> bytes:
        """The frames of one token's deltas, after the role chunk when it is the first."""
        chunks = [{"role": "assistant", "content": None}] if self.n_decoded == 1 else []
        return b"".join(sse(self.chunk(delta)) for delta in [*chunks, *deltas])

    def usage(self) -> dict[str, Any]:
        """``usage``: the prompt's tokens count those taken from the cache."""
        return {
            "completion_tokens": self.n_decoded,
            "prompt_tokens": self.job.n_prompt,
            "total_tokens": self.n_decoded + self.job.n_prompt,
            "prompt_tokens_details": {"cached_tokens": self.cache_n},
        }

    def final(self, slot: int, timings: dict[str, Any]) -> bytes:
        """The end of the stream (finish chunk, usage chunk, ``[DONE]``) or the whole
        ``chat.completion``."""
        self.cache_n = timings["cache_n"]
        if not self.job.stream:
            choice = {"finish_reason": self.finish_reason(), "index": 0, "message": self.message()}
            whole = {
                "choices": [choice],
                **self.envelope("chat.completion"),
                "usage": self.usage(),
                "timings": timings,
            }
            return dumps(whole)
        chunks = [self.chunk({}, self.finish_reason())]
        if self.include_usage:
            chunks.append(
                {"choices": [], **self.envelope("chat.completion.chunk"), "usage": self.usage()}
            )
        chunks[-1]["timings"] = timings
        return b"".join(sse(chunk) for chunk in chunks) + DONE
