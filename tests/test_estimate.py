"""ServiceRate: predictions follow the observed service time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestra.estimate import ServiceRate


def test_prior_until_observed_then_tracks() -> None:
    rate = ServiceRate(prior_s=1.0, alpha=0.5)
    assert rate.mean_service_s == 1.0
    rate.observe(0.2)
    assert rate.mean_service_s == 0.2
    rate.observe(0.4)
    assert abs(rate.mean_service_s - 0.3) < 1e-9


def test_free_slot_means_start_now() -> None:
    rate = ServiceRate(prior_s=2.0)
    assert rate.predicted_start_ms(ahead=0, slots_total=2, slots_busy=1) == 0
    assert rate.predicted_start_ms(ahead=0, slots_total=2, slots_busy=2) == 2000
    assert rate.predicted_start_ms(ahead=2, slots_total=2, slots_busy=2) == 4000


def test_retry_after_scales_with_slots() -> None:
    rate = ServiceRate(prior_s=1.0)
    rate.observe(0.5)
    assert rate.retry_after_ms(slots_total=1) == 500
    assert rate.retry_after_ms(slots_total=4) == 125


@given(
    st.lists(st.floats(0, 100), min_size=1, max_size=10),
    st.integers(0, 50),
    st.integers(1, 8),
    st.integers(0, 8),
)
def test_prediction_is_monotone_in_position(
    samples: list[float], ahead: int, slots: int, busy: int
) -> None:
    rate = ServiceRate()
    for s in samples:
        rate.observe(s)
    here = rate.predicted_start_ms(ahead=ahead, slots_total=slots, slots_busy=busy)
    behind = rate.predicted_start_ms(ahead=ahead + 1, slots_total=slots, slots_busy=busy)
    assert 0 <= here <= behind
    assert rate.retry_after_ms(slots_total=slots) >= 1
