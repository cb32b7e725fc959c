"""One ``POST /v1/embeddings`` request, as llama-server's ``handle_embeddings_impl`` and
``format_embeddings_response_oaicompat`` (server-context.cpp, server-common.cpp) take and
answer it, with deterministic vectors.

``input`` is a string, a list of token ids, or a list of strings and lists of token ids:
one prompt each (a list of token ids alone is one prompt). A string's tokens are the fake's
own with BOS (as ``/completion`` counts a prompt); a list of ids is taken as it is. The
answer is ``{"model", "object": "list", "usage": {"prompt_tokens", "total_tokens"},
"data": [{"embedding", "index", "object": "embedding"}]}``, ``model`` being the body's
``model`` when it is a string, else the model path; ``encoding_format: "base64"`` gives
each embedding as base64 of its little-endian float32 bytes (and the item an
``"encoding_format": "base64"``), as the engine does.

Refused as the engine refuses them (400 ``invalid_request_error``, its messages): a body
without ``input``, an empty ``input`` list, an empty prompt (``""`` or ``[]``: the small
model ``orchestra engine install`` caches adds no BOS, so there ``""`` has no token), an
``input`` of another shape, an ``encoding_format`` other than ``float`` or ``base64``.

A prompt's vector is the mean of its tokens' vectors (fixed pseudo-random ones, drawn from
a hash of the token id), normalized to length 1, each component a float32: mean pooling
over a fake model, so texts that share words are close and the same text is always the same
vector. :func:`embedding` is that vector, for tests to compare.

Directives in a string input provoke faults: ``[[error-before:STATUS]]`` answers that error
(as ``/completion``), ``[[hang:N]]`` (any N) holds the slot and never answers until the
client goes away.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from functools import lru_cache
from typing import Any, Final

import attrs

from .asgi import dumps, error_body
from .words import tokenize

EMBEDDING_DIM: Final = 64
"""The length of every vector the fake answers (the model's ``n_embd``)."""
OFF_MESSAGE: Final = "This server does not support embeddings. Start it with `--embeddings`"
"""The 501 ``not_supported_error`` of an engine started without ``--embeddings``."""

_DIRECTIVE = re.compile(r"\[\[(error-before|hang):(\d+)\]\]")
_ERROR_MESSAGE = {400: "fake invalid request", 500: "fake server error", 503: "no slot available"}
_BAD_SHAPE = (
    '"prompt" elements must be a string, a list of tokens, a JSON object containing a prompt '
    "string, or a list of mixed strings & tokens."
)
_BAD_FORMAT = "The format to return the embeddings in. Can be either float or base64"


@lru_cache(maxsize=65536)
def _token_vector(token: int) -> tuple[float, ...]:
    """The fixed pseudo-random vector of one token id: components in [-1, 1)."""
    raw = hashlib.shake_256(b"embedding:%d" % token).digest(2 * EMBEDDING_DIM)
    return tuple(x / 32768 for x in struct.unpack(f"<{EMBEDDING_DIM}h", raw))


def _float32(values: list[float]) -> tuple[float, ...]:
    return struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values))


def pooled(tokens: list[int]) -> tuple[float, ...]:
    """The vector of a prompt of ``tokens`` (one at least): its tokens' vectors averaged,
    normalized to length 1, as float32 values."""
    sums = [0.0] * EMBEDDING_DIM
    for token in tokens:
        for j, x in enumerate(_token_vector(token)):
            sums[j] += x
    norm = math.sqrt(sum(x * x for x in sums)) or 1.0
    return _float32([x / norm for x in sums])


def embedding(text: str) -> tuple[float, ...]:
    """The vector the fake answers for the string ``text`` (not empty)."""
    return pooled(tokenize(text, add_special=True))


def encode_base64(vector: tuple[float, ...]) -> str:
    """``vector`` as the engine's base64: its little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    )


@attrs.frozen
class EmbeddingJob:
    """One accepted embeddings request: the tokens of each prompt, and how to answer."""

    prompts: tuple[tuple[int, ...], ...]
    model: str
    base64: bool
    hang: bool

    def answer(self) -> bytes:
        """The whole JSON answer."""
        data = []
        for i, tokens in enumerate(self.prompts):
            vector = pooled(list(tokens))
            if self.base64:
                item = {"embedding": encode_base64(vector), "index": i, "object": "embedding"}
                data.append({**item, "encoding_format": "base64"})
            else:
                data.append({"embedding": list(vector), "index": i, "object": "embedding"})
        n = sum(len(tokens) for tokens in self.prompts)
        usage = {"prompt_tokens": n, "total_tokens": n}
        return dumps({"model": self.model, "object": "list", "usage": usage, "data": data})


def accept_embeddings(body: Any, model_path: str) -> EmbeddingJob | tuple[int, bytes]:
    """Validate an embeddings body: the job to run, or the error response to send."""
    if not isinstance(body, dict):
        return 400, error_body(400, "Invalid JSON: the body must be a JSON object")
    if "input" not in body:
        return 400, error_body(400, '"input" or "content" must be provided')
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        return 400, error_body(400, _BAD_FORMAT)
    given = body["input"]
    one = isinstance(given, str) or (isinstance(given, list) and given and _is_tokens(given))
    items = [given] if one else given
    if not isinstance(items, list) or not all(isinstance(p, str) or _is_tokens(p) for p in items):
        return 400, error_body(400, _BAD_SHAPE)
    if not items:
        return 400, error_body(400, '"input" must not be empty')
    prompts: list[tuple[int, ...]] = []
    directives: dict[str, int] = {}
    for item in items:
        if isinstance(item, str):
            directives.update((name, int(arg)) for name, arg in _DIRECTIVE.findall(item))
            tokens = tokenize(item, add_special=True) if item else []
        else:
            tokens = item
        if not tokens:
            return 400, error_body(400, "Input content cannot be empty")
        prompts.append(tuple(tokens))
    if "error-before" in directives:
        status = directives["error-before"]
        return status, error_body(status, _ERROR_MESSAGE.get(status, "fake error"))
    model = body.get("model")
    return EmbeddingJob(
        prompts=tuple(prompts),
        model=model if isinstance(model, str) else model_path,
        base64=fmt == "base64",
        hang="hang" in directives,
    )
