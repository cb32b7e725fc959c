"""The service level a pool delivered over a recent window: time to first token and speed.

The Queue records one :class:`Sample` per completed task; :meth:`SloWindow.snapshot` reads
the samples of the last ``window_s`` seconds for ``GET /v1/replicasets``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import attrs

WINDOW_S = 300.0
"""How far back the snapshot looks."""
MAX_SAMPLES = 4096
"""Samples kept at most, whatever the window (a bound on memory under heavy load)."""


@attrs.frozen
class Sample:
    """One completed task."""

    ended_at: float
    ttft_s: float
    """From admission to the first token, queue wait included: what the client waited."""
    tokens_out: int
    decode_s: float
    """The engine's decode time for those tokens."""


@attrs.frozen
class SloSnapshot:
    """Percentiles and speed over the window; None where no task completed in it."""

    window_s: float
    tasks: int
    ttft_ms_p50: float | None
    ttft_ms_p95: float | None
    tokens_per_s: float | None
    """Decode speed of one stream: tokens out over decode time, summed over the window."""


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of non-empty ``values`` (``fraction`` in (0, 1])."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@attrs.define
class SloWindow:
    """The samples of the last ``window_s`` seconds (at most ``MAX_SAMPLES``)."""

    window_s: float = WINDOW_S
    _samples: deque[Sample] = attrs.field(factory=lambda: deque(maxlen=MAX_SAMPLES), init=False)

    def observe(self, sample: Sample) -> None:
        """Record a completed task (samples arrive in order of ``ended_at``)."""
        self._samples.append(sample)

    def snapshot(self, now: float) -> SloSnapshot:
        """What the tasks that ended within ``window_s`` before ``now`` saw."""
        while self._samples and self._samples[0].ended_at < now - self.window_s:
            self._samples.popleft()
        samples = list(self._samples)
        if not samples:
            return SloSnapshot(self.window_s, 0, None, None, None)
        ttft_ms = [s.ttft_s * 1000 for s in samples]
        decode_s = sum(s.decode_s for s in samples)
        tokens = sum(s.tokens_out for s in samples)
        return SloSnapshot(
            window_s=self.window_s,
            tasks=len(samples),
            ttft_ms_p50=round(percentile(ttft_ms, 0.5), 3),
            ttft_ms_p95=round(percentile(ttft_ms, 0.95), 3),
            tokens_per_s=round(tokens / decode_s, 3) if decode_s > 0 else None,
        )
