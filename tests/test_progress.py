"""Progress: when a ``metrics`` event is due, and what it says (no I/O, made-up times)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra.scheduling.progress import (
    EVERY_TOKENS,
    MIN_INTERVAL_S,
    Progress,
    max_frames,
    on_time_probability,
)


def run(progress: Progress, times: list[float]) -> dict[int, dict[str, int | float]]:
    """Feed token times; the frames that came due, by the count of tokens before them."""
    frames = {}
    for n, now in enumerate(times, start=1):
        frame = progress.on_token(now)
        if frame is not None:
            frames[n] = frame
    return frames


def test_a_frame_every_8_tokens_at_most_once_a_second() -> None:
    progress = Progress(max_tokens=300, deadline_at=None, queue_depth=lambda: 3)
    times = [0.5 + 0.01 * i for i in range(300)]  # 100 tokens/s, the first at t = 0.5
    frames = run(progress, times)
    # token 8 comes at 0.57; the next frame at the first 8th token at least 1 s later
    # (token 108 at 1.57 is not a multiple of 8; 112 is), and so on
    assert list(frames) == [8, 112, 216]
    assert frames[8] == {"queue_depth": 3, "tokens_per_s": 100.0}
    assert all(frame["tokens_per_s"] == pytest.approx(100.0) for frame in frames.values())


def test_a_slow_engine_gets_a_frame_every_8_tokens() -> None:
    progress = Progress(max_tokens=40, deadline_at=None, queue_depth=lambda: 0)
    frames = run(progress, [2.0 * i for i in range(40)])  # 0.5 tokens/s
    assert list(frames) == [8, 16, 24, 32, 40]
    assert frames[40]["tokens_per_s"] == 0.5


def test_with_a_deadline_the_frame_estimates_meeting_it() -> None:
    times = [0.01 * i for i in range(8)]  # 100 tokens/s, steady: no spread
    roomy = Progress(max_tokens=108, deadline_at=10.0, queue_depth=lambda: 0)
    assert run(roomy, times)[8]["on_time_probability"] == 1.0  # 100 tokens in ~1 s, 9.9 s left
    tight = Progress(max_tokens=1008, deadline_at=5.0, queue_depth=lambda: 0)
    assert run(tight, times)[8]["on_time_probability"] == 0.0  # 1000 tokens in ~10 s, 4.9 left


def test_the_spread_of_the_gaps_makes_the_estimate_graded() -> None:
    gaps = [0.005, 0.015] * 4  # mean 10 ms, with spread
    times = [sum(gaps[:i]) for i in range(8)]
    elapsed = times[-1]
    # remaining 100 tokens need about 100 x (elapsed / 7) s: put the deadline just there
    expected_need = 100 * elapsed / 7
    progress = Progress(max_tokens=108, deadline_at=elapsed + expected_need, queue_depth=lambda: 0)
    assert run(progress, times)[8]["on_time_probability"] == pytest.approx(0.5)


def test_on_time_probability_edges_and_shape() -> None:
    p = on_time_probability
    assert p(remaining_tokens=0, time_left_s=1.0, gap_mean_s=0.1, gap_sd_s=0.1) == 1.0
    assert p(remaining_tokens=0, time_left_s=-1.0, gap_mean_s=0.1, gap_sd_s=0.1) == 0.0
    assert p(remaining_tokens=5, time_left_s=0.0, gap_mean_s=0.1, gap_sd_s=0.1) == 0.0
    assert p(remaining_tokens=10, time_left_s=1.0, gap_mean_s=0.1, gap_sd_s=0.0) == 1.0
    assert p(remaining_tokens=10, time_left_s=0.99, gap_mean_s=0.1, gap_sd_s=0.0) == 0.0
    # mean need 1 s, sd 0.1 x sqrt(100) = 1 s: one sd of room is Phi(1)
    one_sd = p(remaining_tokens=100, time_left_s=2.0, gap_mean_s=0.01, gap_sd_s=0.1)
    assert one_sd == pytest.approx(0.5 * (1 + math.erf(1 / math.sqrt(2))))
    more_time = [
        p(remaining_tokens=100, time_left_s=t, gap_mean_s=0.01, gap_sd_s=0.01) for t in (0.5, 1, 2)
    ]
    assert more_time == sorted(more_time)


@given(
    max_tokens=st.integers(1, 200),
    gaps=st.lists(st.floats(0.0, 2.0), max_size=200),
    deadline=st.one_of(st.none(), st.floats(0.0, 100.0)),
)
def test_frames_are_few_and_well_formed(
    max_tokens: int, gaps: list[float], deadline: float | None
) -> None:
    progress = Progress(max_tokens=max_tokens, deadline_at=deadline, queue_depth=lambda: 1)
    times = [sum(gaps[:i]) for i in range(min(len(gaps), max_tokens))]
    frames = run(progress, times)
    assert len(frames) <= max_frames(max_tokens)
    assert all(n % EVERY_TOKENS == 0 for n in frames)
    stamps = [times[n - 1] for n in frames]
    assert all(b - a >= MIN_INTERVAL_S for a, b in itertools.pairwise(stamps))
    for frame in frames.values():
        assert math.isfinite(frame["tokens_per_s"]) and frame["tokens_per_s"] > 0
        assert ("on_time_probability" in frame) == (deadline is not None)
        assert 0.0 <= frame.get("on_time_probability", 0.0) <= 1.0
