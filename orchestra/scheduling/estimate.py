"""Start-time and back-off estimates from the observed service rate."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence

import attrs


@attrs.define
class ServiceRate:
    """An exponentially weighted mean of how long a task holds an engine slot.

    Until the first task finishes it answers from ``prior_s``. ``retry_after_ms`` moves
    with what the engine really does (``predicted_start_ms`` comes from :class:`WorkModel`).
    """

    prior_s: float = 1.0
    alpha: float = 0.2
    _mean_s: float | None = attrs.field(default=None, init=False)
    samples: int = attrs.field(default=0, init=False)

    @property
    def mean_service_s(self) -> float:
        """Mean slot-holding time of recent tasks, in seconds."""
        return self.prior_s if self._mean_s is None else self._mean_s

    def observe(self, service_s: float) -> None:
        """Record the slot-holding time of a finished task."""
        service_s = max(service_s, 0.0)
        if self._mean_s is None:
            self._mean_s = service_s
        else:
            self._mean_s += self.alpha * (service_s - self._mean_s)
        self.samples += 1

    def retry_after_ms(self, *, slots_total: int) -> int:
        """When a queue place is likely to open: one slot frees every ``mean / slots``."""
        return max(1, round(self.mean_service_s * 1000 / max(slots_total, 1)))


@attrs.define
class PredictionErrors:
    """How far the ``predicted_start_ms`` given at admission was from the real wait, for
    the last ``window`` tasks that started (absolute errors, in milliseconds)."""

    window: int = 512
    _errors: deque[int] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._errors = deque(maxlen=self.window)

    def observe(self, predicted_ms: int, waited_ms: int) -> None:
        """A task predicted to start in ``predicted_ms`` started after ``waited_ms``."""
        self._errors.append(abs(waited_ms - predicted_ms))

    def snapshot(self) -> dict[str, int | None]:
        """``samples``, and the median and p95 absolute error (None before the first)."""
        ordered = sorted(self._errors)
        if not ordered:
            return {"samples": 0, "abs_error_ms_p50": None, "abs_error_ms_p95": None}
        return {
            "samples": len(ordered),
            "abs_error_ms_p50": ordered[(len(ordered) - 1) // 2],
            "abs_error_ms_p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        }


@attrs.define
class WorkModel:
    """How long a task holds an engine slot, from what finished tasks took.

    Learned (exponentially weighted) from the engine's own timings: seconds per generated
    token in a slot (which already reflects the slots decoding beside it), seconds per task
    besides decoding (prompt evaluation), and the share of ``max_tokens`` tasks generate.
    Until the first task finishes, every task is taken to need ``prior_s``.
    """

    prior_s: float = 1.0
    alpha: float = 0.2
    _token_s: float | None = attrs.field(default=None, init=False)
    _overhead_s: float = attrs.field(default=0.0, init=False)
    _fill: float = attrs.field(default=1.0, init=False)

    def observe(
        self, *, prompt_s: float, decode_s: float, tokens_out: int, max_tokens: int
    ) -> None:
        """Record a completed task: its prompt and decode times, and tokens out of max."""
        if tokens_out <= 0 or max_tokens <= 0:
            return
        token_s, fill = max(decode_s, 0.0) / tokens_out, min(tokens_out / max_tokens, 1.0)
        if self._token_s is None:
            self._token_s, self._overhead_s, self._fill = token_s, max(prompt_s, 0.0), fill
            return
        a = self.alpha
        self._token_s += a * (token_s - self._token_s)
        self._overhead_s += a * (max(prompt_s, 0.0) - self._overhead_s)
        self._fill += a * (fill - self._fill)

    def _tokens(self, max_tokens: int) -> float:
        return max(1.0, self._fill * max_tokens)

    def expected_s(self, max_tokens: int) -> float:
        """Seconds a task asking for ``max_tokens`` will hold a slot."""
        if self._token_s is None:
            return self.prior_s
        return self._overhead_s + self._token_s * self._tokens(max_tokens)

    def remaining_s(self, max_tokens: int, tokens_sent: int) -> float:
        """Seconds a running task that has sent ``tokens_sent`` tokens still needs."""
        if tokens_sent == 0 or self._token_s is None:
            return self.expected_s(max_tokens)
        left = min(self._tokens(max_tokens), max_tokens) - tokens_sent
        return self._token_s * max(left, 1.0 if tokens_sent < max_tokens else 0.0)


def predicted_start_s(
    running_left: Sequence[float], waiting: Sequence[float], *, slots: int, backlog: int = 0
) -> float:
    """When a new task behind ``waiting`` is dispatched, in seconds from now.

    ``running_left`` holds what each running task still needs, in dispatch order: the first
    ``slots`` of them hold the engine's slots, the others wait inside the engine (up to
    ``backlog`` of them). ``waiting`` holds the expected duration of each task that will be
    dispatched before the new one, in order. Tasks take the first slot to free up; the new
    task is dispatched once fewer than ``slots + backlog`` tasks are at the engine.
    """
    slots = max(slots, 1)
    durations = [*running_left, *waiting]
    room = slots + backlog
    if len(durations) < room:
        return 0.0
    free = sorted(durations[:slots])
    finishes = list(free)
    heapq.heapify(free)
    for duration in durations[slots:]:
        finish = heapq.heappop(free) + duration
        heapq.heappush(free, finish)
        finishes.append(finish)
    finishes.sort()
    return max(finishes[len(durations) - room], 0.0)
