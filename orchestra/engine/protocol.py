"""What the actors need from an engine, and the plain values it answers with.

:class:`Engine` is a protocol: :class:`~orchestra.engine.llamacpp.LlamaCppAdapter` is the
real one, the tests script others. Nothing here imports ``httpx``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

TokenSink = Callable[[str], None]
"""Called synchronously with each non-empty piece of generated text, in order."""


@attrs.frozen
class ToolCallDelta:
    """A piece of a tool call in a chat answer, as OpenAI streams it: the first piece of
    call ``index`` carries its ``id`` and function ``name``, the others a piece of its
    JSON ``arguments``."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


ChatSink = Callable[[str | ToolCallDelta], None]
"""Called synchronously with each piece of a chat answer, in order: text or a tool call's."""


@attrs.frozen
class Completion:
    """How a finished generation ended, from the engine's final stream frame."""

    tokens_out: int
    decode_time_ms: float
    stop_type: str
    """``eos``, ``word`` or ``limit`` (native); ``eos``, ``limit`` or ``tool_calls`` (chat)."""
    tokens_in: int | None = None
    """Prompt tokens the engine evaluated (None when it did not say)."""
    prompt_time_ms: float = 0.0
    """How long the engine took to evaluate the prompt (``timings.prompt_ms``)."""
    cache_n: int = 0
    """Prompt tokens reused from the slot's cache (``timings.cache_n``)."""
    slot: int | None = None
    """The engine slot that ran it (``id_slot`` of the final frame)."""


@attrs.frozen
class Embeddings:
    """What ``/v1/embeddings`` answered for some inputs: one vector per input, in the
    inputs' order, and the prompt tokens the engine evaluated for all of them together."""

    vectors: tuple[tuple[float, ...], ...]
    """One vector per input, each as long as the model's embedding size (``n_embd``);
    llama-server normalizes them (Euclidean norm 1)."""
    prompt_tokens: int
    """``usage.prompt_tokens``: the tokens of every input, summed."""


@attrs.frozen
class EngineProps:
    """What ``/props`` says about the running engine."""

    total_slots: int
    n_ctx: int
    build_info: str
    model_path: str


@attrs.frozen
class HealthProbe:
    """One ``/health`` answer: ``ready`` only on 200; ``detail`` says why not."""

    ready: bool
    detail: str


class Engine(Protocol):
    """What the actors need from an engine; :class:`LlamaCppAdapter` is the real one."""

    async def health(self) -> HealthProbe: ...

    async def props(self) -> EngineProps: ...

    async def count_tokens(self, text: str) -> int: ...

    async def complete(self, params: Mapping[str, Any], on_token: TokenSink) -> Completion: ...

    async def chat(self, params: Mapping[str, Any], on_piece: ChatSink) -> Completion: ...

    async def render_chat(self, params: Mapping[str, Any]) -> str: ...

    async def erase_slot(self, slot: int) -> bool: ...

    async def embed(self, inputs: Sequence[str]) -> Embeddings:
        """One embedding vector per string of ``inputs`` (one or more, none empty), in
        their order, from the engine's ``POST /v1/embeddings``.

        Raises :class:`~orchestra.errors.EngineError`, like the other calls:
        ``WORKER_RESET`` (retriable; ``unreachable`` when no connection could be made) when
        the engine cannot be reached, the connection breaks or the answer is malformed;
        ``DECODE_TIMEOUT`` (retriable) when it stays silent too long; ``POOL_UNREADY``
        (retriable) while it loads; ``INVALID_PARAMS`` (not retriable) when it refuses the
        inputs (an empty one, none at all) or does not serve embeddings at all (started
        without ``--embeddings``: the message names the ``embeddings = true`` key; or with
        no pooling, ``--pooling none``: the message says to pass ``--pooling mean``);
        ``CTX_LIMIT_EXCEEDED`` (not retriable) when an input has more tokens than the
        engine can embed at once (its batch size).
        """
        ...
