"""Per-worker pacing of model calls: two token buckets (requests and tokens per minute).

With an account quota of R requests and TPM tokens per minute shared by at most C concurrent
workers (the event source mapping's maximum concurrency), each worker spends at most R/C requests
and TPM/C tokens per minute. The fleet then runs at the quota without going over it, and without
a thundering herd: the request bucket holds one request (``burst_requests``), so a worker's calls
are spaced ``60 / (R/C)`` seconds apart instead of firing a minute's worth at once.

A call reserves its *expected* tokens up front (input estimate + ``maxTokens``, the way Bedrock
counts a request against the tokens-per-minute quota when it starts) and ``settle`` corrects the
bucket with the real usage afterwards. A reservation bigger than the bucket is admitted when the
bucket is full and leaves the bucket in debt, so the long-run rate still holds.

Pure: the clock is injected (monotonic seconds) and nothing here sleeps. ``reserve`` says how long
to wait, or ``None`` if that is longer than the caller can afford; the caller does the waiting.
Refill is lazy (computed from the elapsed time when the bucket is used). One pacer lives per
execution environment; Lambda runs one invocation at a time in it, so there is no locking.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBucket:
    """``rate_per_s`` units flow in up to ``capacity``; the level may go negative (debt)."""

    def __init__(self, rate_per_s: float, capacity: float, now: float) -> None:
        if rate_per_s <= 0 or capacity <= 0:
            raise ValueError("bucket rate and capacity must be positive")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.level = capacity  # a fresh worker may start at once
        self._stamp = now

    def refill(self, now: float) -> None:
        if now > self._stamp:
            self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate_per_s)
            self._stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` may be taken (call ``refill`` first).

        An amount above the capacity needs a full bucket, not an impossible level.
        """
        needed = min(amount, self.capacity)
        if self.level >= needed:
            return 0.0
        return (needed - self.level) / self.rate_per_s

    def take(self, amount: float) -> None:
        self.level -= amount

    def give_back(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)

    def reshape(self, rate_per_s: float, capacity: float, now: float) -> None:
        """New rate and capacity from ``now`` on; what was earned so far is kept (clamped)."""
        if rate_per_s <= 0 or capacity <= 0:
            raise ValueError("bucket rate and capacity must be positive")
        self.refill(now)
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.level = min(self.level, capacity)


class Pacer:
    """Requests-per-minute and tokens-per-minute budget of one worker (already divided by C)."""

    def __init__(
        self,
        requests_per_minute: float,
        tokens_per_minute: float,
        *,
        clock: Clock = time.monotonic,
        burst_requests: float = 1.0,
    ) -> None:
        _check(requests_per_minute, tokens_per_minute)
        if burst_requests <= 0:
            raise ValueError("burst_requests must be positive")
        self._clock = clock
        self._burst = burst_requests
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        now = clock()
        self._requests = TokenBucket(requests_per_minute / 60.0, burst_requests, now)
        self._tokens = TokenBucket(tokens_per_minute / 60.0, self._token_capacity(), now)

    def _token_capacity(self) -> float:
        # The tokens one request slot is worth: the token bucket bursts no more than the request one.
        return self.tokens_per_minute * self._burst / self.requests_per_minute

    def configure(self, requests_per_minute: float, tokens_per_minute: float) -> None:
        """Apply new rates (e.g. an SSM change) without losing the buckets' current state."""
        _check(requests_per_minute, tokens_per_minute)
        if (requests_per_minute, tokens_per_minute) == (self.requests_per_minute, self.tokens_per_minute):
            return
        now = self._clock()
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._requests.reshape(requests_per_minute / 60.0, self._burst, now)
        self._tokens.reshape(tokens_per_minute / 60.0, self._token_capacity(), now)

    def wait_time(self, tokens: float) -> float:
        """Seconds until one request of ``tokens`` would be admitted (does not reserve)."""
        now = self._clock()
        self._requests.refill(now)
        self._tokens.refill(now)
        return max(self._requests.wait_for(1.0), self._tokens.wait_for(tokens))

    def reserve(self, tokens: float, max_wait_s: float = math.inf) -> float | None:
        """Book one request of ``tokens``; return the seconds to wait before making it.

        Returns ``None`` (and books nothing) when the wait would exceed ``max_wait_s``.
        """
        if tokens < 0:
            raise ValueError("tokens must not be negative")
        wait = self.wait_time(tokens)
        if wait > max_wait_s:
            return None
        # Booked now, spent at now + wait: the refill during the wait pays for it.
        self._requests.take(1.0)
        self._tokens.take(tokens)
        return wait

    def settle(self, reserved_tokens: float, used_tokens: float) -> None:
        """Correct the token bucket once the real usage of a reserved call is known."""
        self._tokens.refill(self._clock())
        difference = reserved_tokens - used_tokens
        if difference >= 0:
            self._tokens.give_back(difference)
        else:
            self._tokens.take(-difference)

    @property
    def request_interval_s(self) -> float:
        """Steady-state spacing of calls."""
        return 60.0 / self.requests_per_minute


def _check(requests_per_minute: float, tokens_per_minute: float) -> None:
    for name, value in (
        ("requests_per_minute", requests_per_minute),
        ("tokens_per_minute", tokens_per_minute),
    ):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")


class CallTimeEstimate:
    """How long one model call is expected to take: a running average with a floor.

    Used to decide whether one more call still fits in the invocation's remaining time. Until
    the first call finishes, ``initial_s`` (deliberately pessimistic) stands in.
    """

    def __init__(self, initial_s: float = 10.0, floor_s: float = 1.0, weight: float = 0.3) -> None:
        if not 0 < weight <= 1:
            raise ValueError("weight must be in (0, 1]")
        self._average = initial_s
        self._floor = floor_s
        self._weight = weight
        self.samples = 0

    def observe(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        if self.samples == 0:
            self._average = seconds  # the first real measure replaces the stand-in
        else:
            self._average += self._weight * (seconds - self._average)
        self.samples += 1

    @property
    def expected_s(self) -> float:
        return max(self._average, self._floor)

    @property
    def average_s(self) -> float:
        """The running average of measured calls (the initial guess until one is measured)."""
        return self._average
