"""OpenAI's ``POST /v1/embeddings``, the pure parts: a request body checked into an
:class:`EmbeddingsRequest` (or refused with every bad field named), and an engine's
:class:`~orchestra.engine.protocol.Embeddings` written as OpenAI's answer.

As on the other OpenAI routes (:mod:`orchestra.http.openai_requests`), a field is accepted
only where orchestra does what OpenAI documents for it: an unknown field is refused by
name, never ignored, and so is ``dimensions`` (the vectors are the model's own size). Only
text is embedded: ``input`` is one non-empty string or a list of 1 to
:data:`MAX_INPUTS` non-empty strings, each at most :data:`MAX_INPUT_BYTES` of UTF-8; token
arrays are refused. ``model`` may be left out (None: the caller picks the model).

``encoding_format: "base64"`` (what OpenAI's Python SDK asks for by default) gives each
vector as base64 of its little-endian float32 bytes, as OpenAI does.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Any, Literal

import attrs

from orchestra.actors import fields
from orchestra.actors.fields import Check, Problem, describe
from orchestra.engine.protocol import Embeddings

EncodingFormat = Literal["float", "base64"]
MAX_INPUTS = 2048
"""Strings one request may embed (OpenAI's limit)."""
MAX_INPUT_BYTES = 1024 * 1024
"""The UTF-8 size of one input at most."""
_TOKENS_REFUSED = "token arrays are not supported: give text (a string or a list of strings)"


@attrs.frozen
class EmbeddingsRequest:
    """A checked embeddings body."""

    model: str | None
    """The model asked for; None when the body names none."""
    inputs: tuple[str, ...]
    """The texts to embed, one or more, none empty; a single string is a tuple of one."""
    encoding_format: EncodingFormat = "float"
    user: str | None = None


def _model(given: Any) -> str:
    if not isinstance(given, str) or not given:
        raise Problem(f"must be a non-empty string (got {describe(given)})")
    return given


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(given: Any, where: str) -> str:
    """One input string, ``where`` naming it (``""`` or ``[i]``)."""
    at = f"{where}: " if where else ""
    if isinstance(given, list) and all(_is_token(t) for t in given):
        raise Problem(f"{at}{_TOKENS_REFUSED}")
    if not isinstance(given, str):
        raise Problem(f"{at}must be a string (got {describe(given)})")
    if not given:
        raise Problem(f"{at}must not be empty")
    size = len(given) if given.isascii() else len(given.encode())
    if size > MAX_INPUT_BYTES:
        raise Problem(f"{at}must be at most {MAX_INPUT_BYTES} bytes of UTF-8 (got {size})")
    return given


def _input(given: Any) -> tuple[str, ...]:
    if isinstance(given, str):
        return (_text(given, ""),)
    if not isinstance(given, list):
        raise Problem(f"must be a string or a list of strings (got {describe(given)})")
    if not given:
        raise Problem("must not be empty (give at least one string)")
    if all(_is_token(t) for t in given):
        raise Problem(_TOKENS_REFUSED)
    if len(given) > MAX_INPUTS:
        raise Problem(f"may hold at most {MAX_INPUTS} strings (got {len(given)})")
    return tuple(_text(item, f"[{i}]") for i, item in enumerate(given))


def _not_supported(given: Any) -> Any:
    raise Problem("not supported by orchestra (the vectors are the model's own size)")


_CHECKS: dict[str, Check] = {
    "input": _input,
    "model": _model,
    "encoding_format": fields.choice(("float", "base64")),
    "user": fields.string(max_len=256),
    "dimensions": _not_supported,
}


def parse_embeddings(body: bytes) -> EmbeddingsRequest:
    """A ``/v1/embeddings`` body, checked; raises one INVALID_PARAMS
    :class:`~orchestra.errors.Refusal` naming every bad field (its ``param`` the first,
    ``input[3]`` for one string of a list) when it is not valid JSON, not an object, or
    has bad fields."""
    raw = fields.load_object(body)
    problems = fields.Problems()
    values = fields.checked(raw, _CHECKS, problems, required=("input",))
    problems.refuse_if_any()
    return EmbeddingsRequest(
        model=values.get("model"),
        inputs=values["input"],
        encoding_format=values.get("encoding_format", "float"),
        user=values.get("user"),
    )


def encode_vector(vector: Sequence[float]) -> str:
    """``vector`` as OpenAI's base64: its little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embeddings_body(
    model_id: str, result: Embeddings, encoding_format: EncodingFormat = "float"
) -> dict[str, Any]:
    """OpenAI's answer (``{"object": "list", "data": [...], "model", "usage"}``) for
    ``result``, the vectors as lists of floats or (``base64``) as :func:`encode_vector`."""
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": encode_vector(vector) if encoding_format == "base64" else list(vector),
        }
        for i, vector in enumerate(result.vectors)
    ]
    tokens = result.prompt_tokens
    return {
        "object": "list",
        "data": data,
        "model": model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
