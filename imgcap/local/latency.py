"""How long the Bedrock stand-in takes to answer, and how long its answers are (issue 13).

``nova-pro`` (the default of ``imgcap local``) follows the request the way a real model does: time
to first token (which includes the prefill of the ~1,600-token image) plus the output tokens at
the model's output speed, and its answers are as long as a real detailed description (170-290
tokens at ``maxTokens`` 300). The usage it reports is the token count its latency was computed
from. ``fast`` is the old behaviour (0.3-0.8 s, a two-sentence answer) for quick tests, and a
number of seconds gives a fixed latency with the short answer.

The Nova Pro figures are assumptions in the range of public measurements (README "Sizing the
caption stage" cites them): time to first token 0.7-1.1 s with an image, 70-90 output tokens a
second, so 3.8 s on average and at most ~5.3 s a call. The stand-in counts one token per word.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ("nova-pro", "fast")


class LatencySpecError(ValueError):
    """``--standin-latency`` is not ``nova-pro``, ``fast`` or a number of seconds."""


@dataclass(frozen=True, slots=True)
class StandinLatency:
    name: str
    ttft_s: tuple[float, float]  # uniform range; for fast/fixed: the whole latency
    output_tokens_per_s: tuple[float, float] | None  # None: latency does not depend on the answer
    output_tokens: tuple[int, int] | None  # a detailed description's length; None: the short answer

    @classmethod
    def uniform(cls, lo: float, hi: float, name: str = "fixed") -> StandinLatency:
        """A latency drawn in [lo, hi] whatever the answer, with the short answer."""
        if lo < 0 or hi < lo:
            raise LatencySpecError(f"latency range must satisfy 0 <= lo <= hi, got {lo}..{hi}")
        return cls(name=name, ttft_s=(lo, hi), output_tokens_per_s=None, output_tokens=None)

    @property
    def detailed(self) -> bool:
        return self.output_tokens is not None

    def answer_tokens(self, rng: random.Random) -> int | None:
        """How many tokens (words) this answer has, or None for the short answer."""
        if self.output_tokens is None:
            return None
        return rng.randint(*self.output_tokens)

    def seconds(self, rng: random.Random, output_tokens: int) -> float:
        """Latency of one answer of ``output_tokens`` tokens."""
        first = rng.uniform(*self.ttft_s) if self.ttft_s[1] > 0 else 0.0
        if self.output_tokens_per_s is None:
            return first
        return first + output_tokens / rng.uniform(*self.output_tokens_per_s)

    def _bounds_s(self, pick: int) -> float:
        if self.output_tokens_per_s is None or self.output_tokens is None:
            return self.ttft_s[pick]
        tokens = self.output_tokens[pick]
        speed = self.output_tokens_per_s[1 - pick]  # slowest speed for the maximum
        return self.ttft_s[pick] + tokens / speed

    @property
    def expected_s(self) -> float:
        """Mean latency of one call (sizes ``--concurrency auto``)."""
        lo, hi = self.ttft_s
        if self.output_tokens_per_s is None or self.output_tokens is None:
            return (lo + hi) / 2
        tokens = sum(self.output_tokens) / 2
        speed = sum(self.output_tokens_per_s) / 2
        return (lo + hi) / 2 + tokens / speed

    @property
    def max_s(self) -> float:
        """The longest a successful call can take (sizes the client's read timeout)."""
        return self._bounds_s(1)

    def describe(self) -> str:
        if self.name == "nova-pro":
            return f"nova-pro (~{self.expected_s:.1f} s a call)"
        lo, hi = self.ttft_s
        return f"{self.name} ({lo:g}-{hi:g} s)" if lo != hi else f"{self.name} ({lo:g} s)"


NOVA_PRO = StandinLatency(
    name="nova-pro", ttft_s=(0.7, 1.1), output_tokens_per_s=(70.0, 90.0), output_tokens=(170, 290)
)
FAST = StandinLatency.uniform(0.3, 0.8, name="fast")


def parse_standin_latency(text: str) -> StandinLatency:
    value = str(text).strip().lower()
    if value == "nova-pro":
        return NOVA_PRO
    if value == "fast":
        return FAST
    try:
        seconds = float(value)
    except ValueError as exc:
        raise LatencySpecError(f"must be nova-pro, fast or a number of seconds, got {text!r}") from exc
    if not 0 <= seconds <= 600:
        raise LatencySpecError(f"seconds must be between 0 and 600, got {text!r}")
    return StandinLatency.uniform(seconds, seconds)
