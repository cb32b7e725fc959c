"""Start-time and back-off estimates from the observed service rate."""

from __future__ import annotations

import math

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
