"""The SLO window behind ``GET /v1/replicasets``: percentiles, speed and the window's edge."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestra.scheduling.slo import MAX_SAMPLES, Sample, SloWindow, percentile


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200))
def test_percentiles_are_observed_values_in_order(values: list[float]) -> None:
    p50, p95 = percentile(values, 0.5), percentile(values, 0.95)
    assert p50 in values and p95 in values
    assert min(values) <= p50 <= p95 <= max(values)
    assert sum(v <= p95 for v in values) >= 0.95 * len(values)


def test_snapshot_reads_only_the_window_and_is_empty_without_tasks() -> None:
    window = SloWindow(window_s=10)
    empty = window.snapshot(now=0)
    assert (empty.tasks, empty.ttft_ms_p50, empty.tokens_per_s) == (0, None, None)
    window.observe(Sample(ended_at=1, ttft_s=9.0, tokens_out=10, decode_s=10.0))  # falls out
    for n in range(1, 21):
        window.observe(Sample(ended_at=20, ttft_s=n / 1000, tokens_out=8, decode_s=0.1))
    snap = window.snapshot(now=25)
    assert snap.tasks == 20
    assert (snap.ttft_ms_p50, snap.ttft_ms_p95) == (10.0, 19.0)
    assert snap.tokens_per_s == 80.0
    assert window.snapshot(now=31).tasks == 0


def test_memory_is_bounded_whatever_the_window() -> None:
    window = SloWindow(window_s=1e9)
    for n in range(MAX_SAMPLES + 10):
        window.observe(Sample(ended_at=n, ttft_s=0.01, tokens_out=1, decode_s=0.01))
    assert window.snapshot(now=MAX_SAMPLES + 10).tasks == MAX_SAMPLES
