"""One ``/completion`` request: its body validated into a :class:`Job` (with the fault
directives of its prompt), its final object, and the messages that end its response.

The fake engine generates a job's tokens itself (it holds the slots); what is here needs
no state of the server beyond what it is passed.
"""

from __future__ import annotations

import re
from typing import Any, Final

import attrs

from .asgi import JSON, Response, dumps, error_body
from .words import tokenize

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


def final_object(
    job: Job, slot: int, content: str, elapsed_s: float, model_path: str
) -> dict[str, Any]:
    """The object of the last stream frame (or the whole answer without ``stream``)."""
    n = job.n_predict
    predicted_ms = elapsed_s * 1000
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
        "timings": {
            "cache_n": 0,
            "prompt_n": job.n_prompt,
            "prompt_ms": 0.5,
            "prompt_per_token_ms": 0.5 / job.n_prompt,
            "prompt_per_second": job.n_prompt / 0.0005,
            "predicted_n": n,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / n if n else 0.0,
            "predicted_per_second": n / max(elapsed_s, 1e-9),
        },
    }


async def send_final(job: Job, response: Response, final: dict[str, Any]) -> None:
    """End a response that generated to its end with its final object."""
    if job.stream:
        await response.body(b"data: " + dumps(final) + b"\n\n", last=True)
    else:
        await response.whole(200, dumps(final))


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
