"""The task model: what a client asked for, and the state the Queue keeps about it."""

from __future__ import annotations

import enum
from typing import Any

import attrs
import trio

from .events import EventLog


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


@attrs.frozen(kw_only=True)
class TaskRequest:
    """A validated ``POST /v1/tasks`` body. Built only by :mod:`orchestra.admission`."""

    prompt: str
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
    """Send ``metrics`` events between the tokens (:mod:`orchestra.progress`)."""

    def engine_params(self) -> dict[str, Any]:
        """The body of the engine's native ``/completion`` call for this task."""
        params: dict[str, Any] = {
            "prompt": self.prompt,
            "n_predict": self.max_tokens,
            "cache_prompt": self.determinism is Determinism.BEST_EFFORT,
        }
        for name in ("seed", "temperature", "top_p", "top_k", "min_p", "repeat_penalty"):
            value = getattr(self, name)
            if value is not None:
                params[name] = value
        if self.stop is not None:
            params["stop"] = list(self.stop)
        return params


@attrs.define(kw_only=True)
class Task:
    """The Queue's record of one task. The Queue actor is its only writer."""

    id: str
    request: TaskRequest
    fingerprint: str
    """Hash of the request body, to tell an idempotent resubmission from a conflicting one."""
    log: EventLog
    submitted_at: float
    queue_position: int
    """Tasks ahead of it when it was admitted (0: next to run)."""
    predicted_start_ms: int
    """Predicted wait from admission to start, given in the 202."""
    state: TaskState = TaskState.QUEUED
    attempts: int = 0
    """How many times it was dispatched (more than once after an engine failure before its
    first token put it back at the head of the queue)."""
    dispatched_at: float | None = None
    ended_at: float | None = None
    tokens_out: int = 0
    error_code: str | None = None
    scope: trio.CancelScope | None = None
    """The cancel scope of its StreamSession while one runs."""
    correlation_id: str | None = None
    """The correlation id of the request that submitted it (for its log lines)."""
    tokens_in: int | None = None
    """Prompt tokens, as the engine counted them when it finished."""
    decode_time_ms: float | None = None
    cached_tokens: int = 0
    """Prompt tokens the engine reused from its cache, when it finished."""
    slot: int | None = None
    """The engine slot it was sent to (``id_slot``: a session's turn), while it runs."""
    ran_on: int | None = None
    """The engine slot that ran it, once it completed."""
    token_cap: int | None = None
    """``n_predict`` when its session's token budget lowered it below ``max_tokens``."""
