"""Unit tests for the visibility backoff schedule (injected randomness, no clock, no sleeping)."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lambdas.caption.backoff import (
    MAX_VISIBILITY_S,
    backoff_ceiling,
    requeue_soon,
    visibility_backoff,
)

pytestmark = pytest.mark.unit

ALMOST_ONE = 0.999999


def test_given_base_10_max_300_when_receive_count_grows_then_ceiling_doubles_until_the_cap():
    # Given the deployed defaults, When the same message keeps failing
    ceilings = [backoff_ceiling(n, 10, 300) for n in range(1, 9)]
    # Then the ceiling doubles per receive and stops at the cap
    assert ceilings == [10, 20, 40, 80, 160, 300, 300, 300]


@pytest.mark.parametrize(
    ("receive_count", "low", "high"),
    [(1, 5, 10), (2, 10, 20), (3, 20, 40), (6, 150, 300), (50, 150, 300)],
)
def test_given_extreme_jitter_values_when_backing_off_then_delay_spans_half_to_full_ceiling(
    receive_count, low, high
):
    # Given jitter at either end of [0, 1), When the delay is computed
    smallest = visibility_backoff(receive_count, 10, 300, rand=lambda: 0.0)
    largest = visibility_backoff(receive_count, 10, 300, rand=lambda: ALMOST_ONE)
    # Then it covers [ceiling / 2, ceiling] ("equal jitter")
    assert (smallest, largest) == (low, high)


def test_given_two_jitter_draws_when_backing_off_then_messages_spread_apart():
    # Given two throttled messages on their 4th receive that draw different random numbers
    first = visibility_backoff(4, 10, 300, rand=lambda: 0.1)
    second = visibility_backoff(4, 10, 300, rand=lambda: 0.9)
    # Then they come back at different times (no thundering herd), both within [40, 80]
    assert 40 <= first < second <= 80


def test_given_first_delivery_count_zero_or_negative_when_backing_off_then_treated_as_first():
    assert visibility_backoff(0, 10, 300, rand=lambda: 0.0) == visibility_backoff(
        1, 10, 300, rand=lambda: 0.0
    )
    assert backoff_ceiling(-5, 10, 300) == 10


def test_given_huge_settings_when_backing_off_then_capped_at_the_sqs_maximum():
    # Given a cap above what SQS accepts and an absurd receive count
    delay = visibility_backoff(10_000, 43_200, 1_000_000, rand=lambda: ALMOST_ONE)
    # Then the visibility is still a valid SQS value
    assert delay == MAX_VISIBILITY_S


def test_given_zero_base_when_backing_off_then_message_comes_back_at_once():
    assert visibility_backoff(3, 0, 300, rand=lambda: 0.5) == 0


def test_given_negative_base_when_backing_off_then_value_error():
    with pytest.raises(ValueError, match="negative"):
        visibility_backoff(1, -1, 300)


def test_given_any_jitter_when_requeueing_soon_then_two_to_four_seconds():
    values = {requeue_soon(rand=functools.partial(float, r)) for r in (0.0, 0.34, 0.67, ALMOST_ONE, 1.0)}
    assert values == {2, 3, 4}


@given(
    receive_count=st.integers(min_value=-3, max_value=10**6),
    base=st.floats(min_value=0, max_value=43_200),
    cap=st.floats(min_value=0, max_value=43_200),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_property_delay_is_a_valid_visibility_between_half_and_full_ceiling(receive_count, base, cap, jitter):
    # Given any settings and any receive count, When the delay is computed
    ceiling = backoff_ceiling(receive_count, base, cap)
    delay = visibility_backoff(receive_count, base, cap, rand=lambda: jitter)
    # Then it is whole seconds within SQS's range, never above the cap, never below half the ceiling
    assert isinstance(delay, int)
    assert 0 <= delay <= MAX_VISIBILITY_S
    assert ceiling / 2 <= delay <= max(ceiling, 0) + 1
    assert delay <= min(cap, MAX_VISIBILITY_S) + 1  # +1: rounding up to whole seconds


@given(
    count=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=0, max_value=1000),
    cap=st.floats(min_value=0, max_value=43_200),
)
def test_property_ceiling_never_shrinks_as_receive_count_grows(count, base, cap):
    assert backoff_ceiling(count + 1, base, cap) >= backoff_ceiling(count, base, cap)
