"""The task vocabulary: what a client asks for (:class:`TaskRequest`) and the states a task
moves through. Plain data: the SDK imports it, so it imports nothing of the server."""

from __future__ import annotations

import enum
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


@attrs.frozen(kw_only=True)
class TaskRequest:
    """A validated ``POST /v1/tasks`` body. Built only by :mod:`orchestra.actors.admission`."""

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
    """Send ``metrics`` events between the tokens (:mod:`orchestra.scheduling.progress`)."""

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
