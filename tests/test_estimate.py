"""ServiceRate, WorkModel and predicted_start_s: predictions follow what the engine did."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestra.scheduling.estimate import ServiceRate, WorkModel, predicted_start_s


def test_prior_until_observed_then_tracks() -> None:
    rate = ServiceRate(prior_s=1.0, alpha=0.5)
    assert rate.mean_service_s == 1.0
    rate.observe(0.2)
    assert rate.mean_service_s == 0.2
    rate.observe(0.4)
    assert abs(rate.mean_service_s - 0.3) < 1e-9


def test_free_room_means_start_now() -> None:
    assert predicted_start_s([], [], slots=2) == 0.0
    assert predicted_start_s([1.0], [], slots=2) == 0.0
    assert predicted_start_s([1.0, 2.0], [], slots=2, backlog=1) == 0.0


def test_a_task_starts_when_the_work_ahead_frees_a_slot() -> None:
    # Two slots busy for 1 s and 3 s; two tasks of 2 s wait ahead.
    assert predicted_start_s([1.0, 3.0], [], slots=2) == 1.0
    assert predicted_start_s([1.0, 3.0], [2.0], slots=2) == 3.0  # 1st waits for 1 s
    assert predicted_start_s([1.0, 3.0], [2.0, 2.0], slots=2) == 3.0
    assert predicted_start_s([1.0, 3.0], [2.0, 2.0, 2.0], slots=2) == 5.0
    # With a backlog of one, the task is sent one finish earlier (it waits in the engine).
    assert predicted_start_s([1.0, 3.0, 2.0], [], slots=2, backlog=1) == 1.0
    assert predicted_start_s([1.0, 3.0, 2.0], [2.0], slots=2, backlog=1) == 3.0


def test_the_work_model_learns_per_token_time_and_how_much_of_max_tokens_is_used() -> None:
    model = WorkModel(prior_s=2.0, alpha=0.5)
    assert model.expected_s(64) == 2.0 and model.remaining_s(64, 10) == 2.0
    model.observe(prompt_s=0.1, decode_s=1.6, tokens_out=32, max_tokens=64)  # 50 ms/token
    assert abs(model.expected_s(64) - (0.1 + 0.05 * 32)) < 1e-9
    assert abs(model.expected_s(10) - (0.1 + 0.05 * 5)) < 1e-9
    assert abs(model.remaining_s(64, 22) - 0.05 * 10) < 1e-9
    assert model.remaining_s(64, 64) == 0.0


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
    running = samples[: min(busy, len(samples))]
    waiting = samples[len(running) :] * ahead
    here = predicted_start_s(running, waiting[:ahead], slots=slots, backlog=busy % 2)
    behind = predicted_start_s(running, waiting[: ahead + 1], slots=slots, backlog=busy % 2)
    assert 0 <= here <= behind
    assert rate.retry_after_ms(slots_total=slots) >= 1
