"""Start-time and back-off estimates from the observed service rate."""

from __future__ import annotations

import math
from collections import deque

import attrs


@attrs.define
class ServiceRate:
    """An exponentially weighted mean of how long a task holds an engine slot.

    Until the first task finishes it answers from ``prior_s``. Every figure derived from
    it (``predicted_start_ms``, ``retry_after_ms``) moves with what the engine really does.
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

    def predicted_start_ms(self, *, ahead: int, slots_total: int, slots_busy: int) -> int:
        """Predicted wait before a task with ``ahead`` queued tasks in front of it starts.

        With a free slot for it, 0. Otherwise slots free up at ``slots_total / mean``
        per second, and it starts after ``ahead - free + 1`` of them have.
        """
        slots = max(slots_total, 1)
        free = max(slots_total - slots_busy, 0)
        if ahead < free:
            return 0
        waves = math.ceil((ahead - free + 1) / slots)
        return round(waves * self.mean_service_s * 1000)

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
