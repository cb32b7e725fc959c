"""Progress frames: the ``metrics`` events a task that asks for them gets between tokens.

A task submitted with ``"metrics": true`` gets, while it runs, a ``metrics`` event right
after every ``EVERY_TOKENS``-th token event, unless its previous ``metrics`` event is less
than ``MIN_INTERVAL_S`` old: one every 8 tokens on a slow engine, about one a second on a
fast one, and never more than ``max_tokens // EVERY_TOKENS`` in all (which is what a
task's event log reserves for them). Its data:

- ``queue_depth``: tasks waiting for a slot at that moment;
- ``tokens_per_s``: this task's decode rate so far, ``(n - 1) / (t_n - t_1)`` over its
  ``n`` token events so far (``t_1`` the first one's time, ``t_n`` the latest's; the
  interval is counted as at least 1 ms);
- ``on_time_probability`` (only when the task has ``deadline_ms``): :func:`on_time_probability`
  of the ``max_tokens - n`` tokens still to come, with the mean and standard deviation of
  this task's gaps between tokens so far, and the time left before the deadline.

A task without ``"metrics": true`` gets no :class:`Progress` and exactly the events it
always got.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

from orchestra.task import TaskRequest

EVERY_TOKENS = 8
"""A ``metrics`` event may follow every this-many token events."""
MIN_INTERVAL_S = 1.0
"""At most one ``metrics`` event per this many seconds."""
MIN_ELAPSED_S = 0.001
"""The shortest interval a rate is computed over (it keeps the rate finite)."""


def max_frames(max_tokens: int) -> int:
    """The most ``metrics`` events a task of ``max_tokens`` tokens can get."""
    return max_tokens // EVERY_TOKENS


def on_time_probability(
    *, remaining_tokens: int, time_left_s: float, gap_mean_s: float, gap_sd_s: float
) -> float:
    """The probability that ``remaining_tokens`` more tokens come within ``time_left_s``.

    The gaps between tokens are taken as independent draws with the mean and standard
    deviation seen so far, so by the central limit theorem the time the remaining tokens
    take is about normal with mean ``r * gap_mean`` and standard deviation
    ``gap_sd * sqrt(r)``; the answer is its normal CDF at ``time_left_s``. With no time left it
    is 0, with no token left 1, and with no spread seen it is 0 or 1. It counts every
    token up to ``max_tokens``: a generation that stops earlier (end of text, a stop
    string) only finishes sooner, so the estimate errs on the safe side.
    """
    if remaining_tokens <= 0:
        return 1.0 if time_left_s >= 0 else 0.0
    if time_left_s <= 0:
        return 0.0
    mean = remaining_tokens * gap_mean_s
    sd = gap_sd_s * math.sqrt(remaining_tokens)
    if sd <= 0:
        return 1.0 if mean <= time_left_s else 0.0
    z = (time_left_s - mean) / sd
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@attrs.define
class Progress:
    """Watches one running task's tokens and says when a ``metrics`` event is due.

    Owned by the task's StreamSession (one per dispatch); times are on the Trio clock.
    """

    max_tokens: int
    deadline_at: float | None
    """When the task's deadline passes (admission + ``deadline_ms``), if it has one."""
    queue_depth: Callable[[], int]
    _tokens: int = attrs.field(default=0, init=False)
    _first_at: float = attrs.field(default=0.0, init=False)
    _last_at: float = attrs.field(default=0.0, init=False)
    _gap_mean: float = attrs.field(default=0.0, init=False)
    _gap_m2: float = attrs.field(default=0.0, init=False)
    """Welford's running sum of squared deviations of the gaps."""
    _last_frame_at: float | None = attrs.field(default=None, init=False)

    @classmethod
    def of(
        cls, request: TaskRequest, submitted_at: float, queue_depth: Callable[[], int]
    ) -> Progress | None:
        """The progress of a task submitted at ``submitted_at``, if it asked for ``metrics``
        events (its deadline counts from its submission)."""
        if not request.metrics:
            return None
        deadline_at = None
        if request.deadline_ms is not None:
            deadline_at = submitted_at + request.deadline_ms / 1000
        return cls(request.max_tokens, deadline_at, queue_depth)

    def on_token(self, now: float) -> dict[str, int | float] | None:
        """Count a token event appended at ``now``; the data of a ``metrics`` event to
        append after it, or None when none is due."""
        self._tokens += 1
        if self._tokens == 1:
            self._first_at = now
        else:
            gap = now - self._last_at
            gaps = self._tokens - 1
            delta = gap - self._gap_mean
            self._gap_mean += delta / gaps
            self._gap_m2 += delta * (gap - self._gap_mean)
        self._last_at = now
        if self._tokens % EVERY_TOKENS:
            return None
        if self._last_frame_at is not None and now - self._last_frame_at < MIN_INTERVAL_S:
            return None
        self._last_frame_at = now
        return self._frame(now)

    def _frame(self, now: float) -> dict[str, int | float]:
        gaps = self._tokens - 1  # at least EVERY_TOKENS - 1
        gap_mean = max(now - self._first_at, MIN_ELAPSED_S) / gaps
        frame: dict[str, int | float] = {
            "queue_depth": self.queue_depth(),
            "tokens_per_s": round(1.0 / gap_mean, 3),
        }
        if self.deadline_at is not None:
            gap_sd = math.sqrt(self._gap_m2 / (gaps - 1)) if gaps > 1 else 0.0
            probability = on_time_probability(
                remaining_tokens=self.max_tokens - self._tokens,
                time_left_s=self.deadline_at - now,
                gap_mean_s=gap_mean,
                gap_sd_s=gap_sd,
            )
            frame["on_time_probability"] = round(probability, 4)
        return frame
