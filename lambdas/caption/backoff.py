"""Visibility timeouts for messages handed back to the caption queue. Pure: no I/O, no clock.

A retryable failure (throttle, transient Bedrock fault) is not slept on inside Lambda: the message
becomes a batch item failure and its visibility timeout is set from this schedule, so SQS holds it
back and the worker moves on. The delay grows with ``ApproximateReceiveCount``:

    ceiling(n) = min(max_s, base_s * 2 ** (n - 1))          n = receive count (1 on first delivery)
    delay(n)   = ceiling(n) / 2 + U[0, 1) * ceiling(n) / 2   ("equal jitter")

Equal jitter keeps a floor of half the ceiling (a throttled fleet really backs off) while spreading
retries over the other half (no synchronised thundering herd). The result is whole seconds, at most
``MAX_VISIBILITY_S`` (SQS refuses more than 12 hours).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

MAX_VISIBILITY_S = 43_200  # SQS ChangeMessageVisibility upper bound (12 hours)
_MAX_EXPONENT = 40  # 2**40 s is far beyond any cap; keeps the arithmetic finite

# "Come back soon": for messages we did not get to (the batch ran out of time). They were not
# throttled, so they should not wait for the full queue visibility timeout either.
SOON_MIN_S = 2
SOON_SPREAD_S = 3

Random = Callable[[], float]


def backoff_ceiling(receive_count: int, base_s: float, max_s: float) -> float:
    """Upper end of the delay for the ``receive_count``-th delivery (before jitter)."""
    if base_s < 0 or max_s < 0:
        raise ValueError("backoff base and max must not be negative")
    exponent = min(max(receive_count, 1) - 1, _MAX_EXPONENT)
    return float(min(max_s, base_s * 2.0**exponent, MAX_VISIBILITY_S))


def visibility_backoff(receive_count: int, base_s: float, max_s: float, rand: Random = random.random) -> int:
    """Seconds to hide a retryable message for, given how often it has been received.

    ``rand`` returns a float in [0, 1); inject a fixed one for deterministic tests.
    """
    ceiling = backoff_ceiling(receive_count, base_s, max_s)
    jitter = min(max(rand(), 0.0), 1.0)
    delay = ceiling / 2.0 + jitter * ceiling / 2.0
    return int(min(math.ceil(delay), MAX_VISIBILITY_S))


def requeue_soon(rand: Random = random.random) -> int:
    """A short, slightly spread visibility (2-4 s) for messages a batch had no time left for."""
    jitter = min(max(rand(), 0.0), 1.0)
    return SOON_MIN_S + min(math.floor(jitter * SOON_SPREAD_S), SOON_SPREAD_S - 1)
