"""The task vocabulary: what a client asks for (:class:`TaskRequest`) and the states a task
moves through. Plain data: the SDK imports it, so it imports nothing of the server.

A task's input is a :class:`Prompt` (text the engine continues: ``POST /v1/tasks``,
``POST /v1/completions``) or a :class:`Chat` (messages the engine renders with the model's
chat template: ``POST /v1/chat/completions``); a request holds exactly one of them."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs


class TaskState(enum.StrEnum):
    """Where a task is in its life. Only the Queue actor changes it."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """True for the three states a task never leaves."""
        return self in _TERMINAL


_TERMINAL = frozenset({TaskState.COMPLETED, TaskState.CANCELLED, TaskState.FAILED})


class Priority(enum.StrEnum):
    """Scheduling class of a task."""

    INTERACTIVE = "interactive"
    BATCH = "batch"


class Determinism(enum.StrEnum):
    """``strict``: the engine re-evaluates the prompt (``cache_prompt: false``) so the same
    seed gives the same bytes. ``best_effort``: the engine may reuse its prompt cache."""

    STRICT = "strict"
    BEST_EFFORT = "best_effort"


class Face(enum.StrEnum):
    """The API a task came in through (the ``face`` label of metrics and log lines)."""

    V1 = "v1"
    OPENAI = "openai"


class Endpoint(enum.StrEnum):
    """The engine call a task is: llama-server's native ``/completion`` or its
    OpenAI-compatible ``/v1/chat/completions`` (which renders the chat template and parses
    tool calls)."""

    COMPLETION = "completion"
    CHAT = "chat"
    EMBEDDING = "embedding"
    """llama-server's ``/v1/embeddings``: the vectors come in the task's ``end`` event."""


@attrs.frozen
class Embed:
    """Texts to embed (``POST /v1/embeddings``), already validated."""

    inputs: tuple[str, ...]


@attrs.frozen
class Chat:
    """A conversation: OpenAI ``messages`` (and ``tools``), already validated, as JSON."""

    messages: tuple[Mapping[str, Any], ...]
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: str | None = None
    """``auto``, ``none`` or ``required``; None: the engine's default (``auto``)."""
    parallel_tool_calls: bool | None = None


@attrs.frozen
class KeepArtifact:
    """A task's ``"artifact"``: when it completes, keep its generated text as an artifact
    of this ``kind`` with these ``tags``, recording the task's id and session
    (:mod:`orchestra.artifacts`)."""

    kind: str
    tags: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class TaskRequest:
    """A validated task: built only by :mod:`orchestra.actors.admission` (``POST /v1/tasks``)
    and by the OpenAI face's parser (:mod:`orchestra.http.openai_requests`)."""

    prompt: str | Chat | Embed
    max_tokens: int
    task_id: str | None = None
    session_id: str | None = None
    seed: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    stop: tuple[str, ...] | None = None
    priority: Priority = Priority.INTERACTIVE
    deadline_ms: int | None = None
    determinism: Determinism = Determinism.STRICT
    model_ref: str | None = None
    engine: str | None = None
    ctx: int | None = None
    workload: str | None = None
    sampler_profile_version: str | None = None
    kv_hint: str | None = None
    metrics: bool = False
    """Send ``metrics`` events between the tokens (:mod:`orchestra.scheduling.progress`)."""
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: tuple[tuple[int, float], ...] | None = None
    """Token id and bias pairs (OpenAI's ``logit_bias`` object)."""
    json_schema: Mapping[str, Any] | None = None
    """The engine constrains the output to JSON matching this schema (OpenAI's
    ``json_object`` is ``{"type": "object"}``)."""
    face: Face = Face.V1
    artifact: KeepArtifact | None = None
    """Keep the generated text as an artifact when the task completes."""

    @property
    def endpoint(self) -> Endpoint:
        """The engine call this task is."""
        if isinstance(self.prompt, Embed):
            return Endpoint.EMBEDDING
        return Endpoint.CHAT if isinstance(self.prompt, Chat) else Endpoint.COMPLETION

    def engine_params(self) -> dict[str, Any]:
        """The body of the engine call for this task (:attr:`endpoint` says which)."""
        if isinstance(self.prompt, Embed):
            return {"input": list(self.prompt.inputs)}
        params: dict[str, Any] = {
            "n_predict": self.max_tokens,
            "cache_prompt": self.determinism is Determinism.BEST_EFFORT,
        }
        for name in SAMPLING_FIELDS:
            value = getattr(self, name)
            if value is not None:
                params[name] = value
        if self.stop is not None:
            params["stop"] = list(self.stop)
        if self.logit_bias is not None:
            params["logit_bias"] = [list(pair) for pair in self.logit_bias]
        if isinstance(self.prompt, str):
            params["prompt"] = self.prompt
            if self.json_schema is not None:
                params["json_schema"] = dict(self.json_schema)
            return params
        chat = self.prompt
        params["messages"] = [dict(m) for m in chat.messages]
        if chat.tools:
            params["tools"] = [dict(t) for t in chat.tools]
        if chat.tool_choice is not None:
            params["tool_choice"] = chat.tool_choice
        if chat.parallel_tool_calls is not None:
            params["parallel_tool_calls"] = chat.parallel_tool_calls
        if self.json_schema is not None:
            schema = {"schema": dict(self.json_schema)}
            params["response_format"] = {"type": "json_schema", "json_schema": schema}
        return params


SAMPLING_FIELDS = (
    # the request's fields the engine takes as they are (same name, same meaning)
    "seed",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
)
