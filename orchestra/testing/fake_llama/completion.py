"""One ``/completion`` request: its body validated into a :class:`Job` (with the fault
directives of its prompt), its final object, and the messages that end its response.

The fake engine generates a job's tokens itself (it holds the slots) and hands each to the
job's :class:`Face`, which writes them in its endpoint's wire format: :class:`NativeFace`
here for ``/completion``, the faces of :mod:`.chat` and :mod:`.toolcall` for
``/v1/chat/completions``. What is here needs no state of the server beyond what it is passed.
"""

from __future__ import annotations

import re
from typing import Any, Final, Protocol

import attrs

from .asgi import JSON, Response, dumps, error_body
from .words import token_id, tokenize

DEFAULT_N_PREDICT: Final = 16
"""Tokens generated when a request gives no ``n_predict`` (or gives -1)."""

_DIRECTIVE = re.compile(r"\[\[(error-before|error-mid|drop|hang|empty):(\d+)\]\]")
_ERROR_MESSAGE = {
    400: "fake invalid request",
    500: "fake server error",
    503: "no slot available",
}


@attrs.define
class Job:
    """One accepted completion request."""

    prompt: str
    seed: object
    n_predict: int
    n_prompt: int
    stream: bool
    directives: dict[str, int]
    body: dict[str, Any]

    @property
    def id_slot(self) -> int | None:
        """The slot asked for (``id_slot`` >= 0), else None."""
        wanted = self.body.get("id_slot")
        ok = isinstance(wanted, int) and not isinstance(wanted, bool) and wanted >= 0
        return wanted if ok else None


def accept(body: Any, slot_ctx: int) -> Job | tuple[int, bytes]:
    """Validate a completion body: the job to run, or the error response to send.

    ``slot_ctx`` is one slot's context: the prompt's tokens plus ``n_predict`` must fit.
    """
    if not isinstance(body, dict):
        return 400, error_body(400, "Invalid JSON: the body must be a JSON object")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        return 400, error_body(400, '"prompt" must be provided')
    n_predict = next(
        (body[k] for k in ("n_predict", "max_tokens", "max_completion_tokens") if k in body),
        None,
    )
    if n_predict is None or n_predict == -1:
        n_predict = DEFAULT_N_PREDICT
    if not isinstance(n_predict, int) or isinstance(n_predict, bool) or n_predict < 0:
        return 400, error_body(400, "Field 'n_predict': Value must be an integer >= -1")
    directives = {name: int(arg) for name, arg in _DIRECTIVE.findall(prompt)}
    if "error-before" in directives:
        status = directives["error-before"]
        return status, error_body(status, _ERROR_MESSAGE.get(status, "fake error"))
    n_prompt = len(tokenize(prompt, add_special=True))
    if n_prompt + n_predict > slot_ctx:
        message = (
            f"request ({n_prompt + n_predict} tokens) exceeds the available context size "
            f"({slot_ctx} tokens), try increasing it"
        )
        extra = {"n_prompt_tokens": n_prompt, "n_ctx": slot_ctx}
        return 400, error_body(400, message, "exceed_context_size_error", **extra)
    stream = body.get("stream") is True
    return Job(prompt, body.get("seed", -1), n_predict, n_prompt, stream, directives, body)


class Face(Protocol):
    """How one generation's tokens and its end are written on the wire."""

    @property
    def done(self) -> bool:
        """No more tokens to generate (the budget is spent, or the answer ended)."""

    @property
    def n_decoded(self) -> int:
        """Tokens generated so far."""

    @property
    def text(self) -> str:
        """The text generated so far (what the slot's cache keeps)."""

    def token(self, word: str, piece: str) -> bytes:
        """Take the next generated token (``word``, whose text is ``piece``); return the
        stream frames it yields (``b""`` for none, and always without ``stream``)."""

    def final(self, slot: int, timings: dict[str, Any]) -> bytes:
        """The end of the response: the last frames with ``stream``, else the whole body."""


def timings(job: Job, n: int, elapsed_s: float, cache_n: int) -> dict[str, Any]:
    """The ``timings`` object of a job that generated ``n`` tokens, ``cache_n`` of whose
    prompt tokens came from the slot's cache."""
    predicted_ms = elapsed_s * 1000
    return {
        "cache_n": cache_n,
        "prompt_n": job.n_prompt - cache_n,
        "prompt_ms": 0.5,
        "prompt_per_token_ms": 0.5 / job.n_prompt,
        "prompt_per_second": job.n_prompt / 0.0005,
        "predicted_n": n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / n if n else 0.0,
        "predicted_per_second": n / max(elapsed_s, 1e-9),
    }


@attrs.define
class NativeFace:
    """``/completion``'s frames: one per token, then the final object."""

    job: Job
    model_path: str
    pieces: list[str] = attrs.field(factory=list)

    @property
    def done(self) -> bool:
        return len(self.pieces) >= self.job.n_predict

    @property
    def n_decoded(self) -> int:
        return len(self.pieces)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def token(self, word: str, piece: str) -> bytes:
        self.pieces.append(piece)
        if not self.job.stream:
            return b""
        frame = {
            "index": 0,
            "content": piece,
            "tokens": [token_id(word)],
            "stop": False,
            "id_slot": -1,
            "tokens_predicted": len(self.pieces),
            "tokens_evaluated": self.job.n_prompt,
        }
        return b"data: " + dumps(frame) + b"\n\n"

    def final(self, slot: int, timings: dict[str, Any]) -> bytes:
        final = final_object(self.job, slot, self.text, 0.0, self.model_path)
        final["timings"] = timings
        return b"data: " + dumps(final) + b"\n\n" if self.job.stream else dumps(final)


def final_object(
    job: Job, slot: int, content: str, elapsed_s: float, model_path: str
) -> dict[str, Any]:
    """The object of the last stream frame (or the whole answer without ``stream``)."""
    n = job.n_predict
    return {
        "index": 0,
        "content": "" if job.stream else content,
        "tokens": [],
        "id_slot": slot,
        "stop": True,
        "model": model_path,
        "tokens_predicted": n,
        "tokens_evaluated": job.n_prompt,
        "generation_settings": {
            "n_predict": n,
            "seed": job.seed,
            "temperature": job.body.get("temperature", 0.8),
            "stream": job.stream,
        },
        "prompt": job.prompt,
        "has_new_line": False,
        "truncated": False,
        "stop_type": "limit",
        "stopping_word": "",
        "tokens_cached": 0,
        "timings": timings(job, n, elapsed_s, 0),
    }


async def send_final(job: Job, response: Response, data: bytes) -> None:
    """End a response that generated to its end with its face's last frames or body."""
    if job.stream:
        await response.body(data, last=True)
    else:
        await response.whole(200, data)


async def send_mid_error(job: Job, response: Response) -> None:
    """End a response with the error of ``[[error-mid:N]]``."""
    error = error_body(500, "Context size has been exceeded.", "server_error")
    if job.stream:
        await response.body(b"data: " + error + b"\n\n", last=True)
    else:
        await response.whole(500, error)


async def abort(job: Job, response: Response) -> None:
    """Before ``[[drop:N]]`` cuts the connection: without ``stream``, promise a body that
    never comes."""
    if not job.stream:  # promise a body, then never send it
        await response.start(200, JSON, (b"content-length", b"4096"))
