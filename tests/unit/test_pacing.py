"""Unit tests for the per-worker pacer and the call-time estimate, driven by a fake clock."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdas.caption.pacing import CallTimeEstimate, Pacer, TokenBucket
from lambdas.shared.config import PacingSpec

pytestmark = pytest.mark.unit


class FakeClock:
    """Monotonic seconds that only move when the test (or a fake sleep) moves them."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def _run_worker(
    pacer: Pacer, clock: FakeClock, *, tokens: float, duration_s: float, used: float | None = None
):
    """A worker that calls as fast as the pacer allows for ``duration_s`` of fake time."""
    starts: list[float] = []
    end = clock.now + duration_s
    for _ in range(100_000):  # bounded loop
        wait = pacer.reserve(tokens)
        assert wait is not None
        clock.sleep(wait)
        if clock.now >= end:
            break
        starts.append(clock.now)
        if used is not None:
            pacer.settle(tokens, used)
    return starts


def _max_in_any_window(starts: list[float], window_s: float = 60.0) -> int:
    best, window = 0, deque[float]()
    for t in starts:
        window.append(t)
        while window and window[0] <= t - window_s:
            window.popleft()
        best = max(best, len(window))
    return best


def test_given_fresh_pacer_when_two_calls_back_to_back_then_second_waits_one_interval():
    # Given a worker share of 60 requests per minute (one per second)
    clock = FakeClock()
    pacer = Pacer(60, 1_000_000, clock=clock)
    # When it reserves twice at the same instant, then a third time
    first, second, third = pacer.reserve(100), pacer.reserve(100), pacer.reserve(100)
    # Then the first goes at once and each later one is spaced a full interval after the previous
    assert (first, second, third) == (0.0, 1.0, 2.0)


def test_given_quota_share_r_over_c_when_worker_runs_ten_minutes_then_never_exceeds_it_in_any_minute():
    # Given R = 100 requests/min shared by C = 4 workers and ample tokens
    spec = PacingSpec(requests_per_minute=100, tokens_per_minute=10_000_000, max_concurrency=4)
    clock = FakeClock()
    pacer = Pacer(spec.worker_rpm, spec.worker_tpm, clock=clock)
    # When one worker calls as fast as the pacer lets it, for 10 minutes of fake time
    starts = _run_worker(pacer, clock, tokens=2_000, duration_s=600)
    # Then it runs at its share (25/min), not below and not above, in every sliding minute
    assert _max_in_any_window(starts) <= 25 + 1  # one request of burst
    assert len(starts) >= 25 * 10 - 1
    # and the whole fleet of C such workers stays within R
    assert spec.max_concurrency * (len(starts) / 10) <= spec.requests_per_minute + spec.max_concurrency


def test_given_tokens_per_minute_binding_when_worker_runs_then_token_rate_is_honoured():
    # Given plenty of requests but only 10,000 tokens/min, each call reserving 2,000
    clock = FakeClock()
    pacer = Pacer(1_000, 10_000, clock=clock)
    # When the worker runs for 10 minutes
    starts = _run_worker(pacer, clock, tokens=2_000, duration_s=600)
    # Then it makes 5 calls per minute (tokens decide, not requests)
    assert 49 <= len(starts) <= 51
    assert _max_in_any_window(starts) <= 6


def test_given_calls_use_fewer_tokens_than_reserved_when_settled_then_bucket_refunds_the_difference():
    # Given a token-bound worker (10,000 tokens/min) reserving 2,000 per call
    clock_a, clock_b = FakeClock(), FakeClock()
    unsettled = Pacer(1_000, 10_000, clock=clock_a)
    settled = Pacer(1_000, 10_000, clock=clock_b)
    # When one pacer learns the real usage (1,000 tokens per call) and the other does not
    calls_unsettled = _run_worker(unsettled, clock_a, tokens=2_000, duration_s=600)
    calls_settled = _run_worker(settled, clock_b, tokens=2_000, duration_s=600, used=1_000)
    # Then the settled one makes about twice the calls, still within 10,000 tokens/min of real usage
    assert len(calls_settled) >= 1.8 * len(calls_unsettled)
    assert len(calls_settled) * 1_000 <= 10_000 * 10 + 2_000


def test_given_wait_longer_than_allowed_when_reserving_then_none_and_nothing_booked():
    # Given a worker that just spent its request (next one in 1.2 s at 50/min)
    clock = FakeClock()
    pacer = Pacer(50, 1_000_000, clock=clock)
    assert pacer.reserve(100) == 0.0
    before = pacer.wait_time(100)
    # When a caller can afford to wait only 1 s
    refused = pacer.reserve(100, max_wait_s=1.0)
    # Then nothing is reserved, and the next caller sees the same wait
    assert refused is None
    assert pacer.wait_time(100) == pytest.approx(before) == pytest.approx(1.2)
    assert pacer.reserve(100, max_wait_s=1.25) == pytest.approx(1.2)


def test_given_new_rate_from_ssm_when_configured_then_state_is_kept_not_reset():
    # Given a worker at 60/min that has just made a call (its bucket is empty)
    clock = FakeClock()
    pacer = Pacer(60, 1_000_000, clock=clock)
    pacer.reserve(100)
    clock.sleep(0.25)
    # When the quota share doubles to 120/min
    pacer.configure(120, 1_000_000)
    # Then the quarter second already earned counts, the rest refills at the new rate,
    # and the bucket was not refilled to full (which would allow an extra burst)
    assert pacer.requests_per_minute == 120
    assert pacer.wait_time(100) == pytest.approx((1 - 0.25) / 2.0)


def test_given_lower_rate_from_ssm_when_configured_then_pending_debt_slows_down():
    clock = FakeClock()
    pacer = Pacer(120, 1_000_000, clock=clock)
    pacer.reserve(100)
    pacer.reserve(100)  # one interval (0.5 s) in debt
    pacer.configure(30, 1_000_000)  # 2 s per request from now on
    assert pacer.wait_time(100) == pytest.approx(2 * 2.0)


def test_given_same_rates_when_configured_again_then_nothing_changes():
    clock = FakeClock()
    pacer = Pacer(60, 100_000, clock=clock)
    pacer.reserve(5_000)
    before = pacer.wait_time(5_000)
    pacer.configure(60, 100_000)
    assert pacer.wait_time(5_000) == before


@pytest.mark.parametrize(("rpm", "tpm"), [(0, 1), (1, 0), (-1, 1), (float("nan"), 1), (float("inf"), 1)])
def test_given_invalid_rates_when_building_then_value_error(rpm, tpm):
    with pytest.raises(ValueError, match="must be a positive number"):
        Pacer(rpm, tpm, clock=FakeClock())


def test_given_bucket_below_capacity_when_time_passes_then_refills_lazily_up_to_capacity():
    bucket = TokenBucket(rate_per_s=2.0, capacity=5.0, now=0.0)
    bucket.take(5.0)
    bucket.refill(1.0)
    assert bucket.level == pytest.approx(2.0)
    bucket.refill(100.0)
    assert bucket.level == pytest.approx(5.0)
    assert bucket.wait_for(50.0) == 0.0  # more than capacity: admitted on a full bucket


@settings(max_examples=60, deadline=None)
@given(
    rpm=st.floats(min_value=1, max_value=600),
    gaps=st.lists(st.floats(min_value=0, max_value=30), min_size=1, max_size=60),
)
def test_property_any_call_pattern_stays_within_rpm_in_every_minute(rpm, gaps):
    # Given any rate and any pattern of idle time between attempts
    clock = FakeClock()
    pacer = Pacer(rpm, 1e12, clock=clock)
    starts = []
    for gap in gaps:
        clock.sleep(gap)
        wait = pacer.reserve(1)
        assert wait is not None
        clock.sleep(wait)
        starts.append(clock.now)
    # Then no sliding minute holds more than the rate plus the one-request burst
    assert _max_in_any_window(starts) <= rpm + 1 + 1e-9


def test_given_no_samples_when_estimating_call_time_then_pessimistic_initial_value():
    assert CallTimeEstimate(initial_s=10.0).expected_s == 10.0


def test_given_samples_when_estimating_call_time_then_running_average_with_floor():
    estimate = CallTimeEstimate(initial_s=10.0, floor_s=1.0, weight=0.5)
    estimate.observe(4.0)  # the first real measure replaces the stand-in
    assert estimate.expected_s == pytest.approx(4.0)
    estimate.observe(8.0)
    assert estimate.expected_s == pytest.approx(6.0)
    for _ in range(20):
        estimate.observe(0.01)
    assert estimate.expected_s == 1.0  # the floor
