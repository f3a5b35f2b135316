"""Can the fleet reach the quota? Pure arithmetic over what a worker measures.

One caption worker makes one model call at a time, so C workers at L seconds a call make at most
``C x 60 / L`` calls a minute, whatever the pacing allows. The rate the pacing aims at is the
smaller of the requests-per-minute quota R and what the tokens-per-minute quota allows at the
tokens reserved per call. When work is waiting (a backlog) and the reachable rate is below
``SHORTFALL_THRESHOLD`` of that target, the fleet is too small: the worker says so in a metric, a
``health/capacity.json`` document and one sentence with the fix (``imgcap status`` prints it).

Nothing here sleeps or reads a clock: the caller passes the measured call time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lambdas.shared.contract import SHORTFALL_THRESHOLD, auto_concurrency, reachable_rpm

# A record that waited this long in the queue before its first receive means work is piling up.
BACKLOG_WAIT_S = 10.0
# Fewer measured calls than this say nothing yet about the call time.
MIN_SAMPLES = 3


def target_rpm(requests_per_minute: float, tokens_per_minute: float, tokens_per_call: float) -> float:
    """The rate the pacing lets the fleet reach: R, or less when the tokens quota binds first."""
    if tokens_per_call <= 0:
        return requests_per_minute
    return min(requests_per_minute, tokens_per_minute / tokens_per_call)


def has_backlog(records: int, longest_queue_wait_s: float | None) -> bool:
    """Work is waiting: the batch brought more than one record, or one sat long in the queue."""
    return records >= 2 or (longest_queue_wait_s is not None and longest_queue_wait_s >= BACKLOG_WAIT_S)


@dataclass(frozen=True, slots=True)
class Assessment:
    configured_rpm: float  # R from SSM
    target_rpm: float  # what the pacing aims at (R, or the TPM bound)
    concurrency: int  # C, the event source mapping's maximum concurrency
    call_s: float  # observed seconds per model call
    reachable_rpm: float  # C x 60 / L
    suggested_concurrency: int  # auto_concurrency(target, L)
    backlog: bool

    @property
    def shortfall(self) -> bool:
        return self.backlog and self.reachable_rpm < SHORTFALL_THRESHOLD * self.target_rpm

    def sentence(self) -> str:
        if self.target_rpm < self.configured_rpm:
            of = f"{self.target_rpm:.0f} requests/minute the tokens-per-minute quota allows"
        else:
            of = f"{self.configured_rpm:.0f} requests/minute configured"
        return (
            f"at the observed {self.call_s:.1f} s per call, {self.concurrency} workers can do "
            f"~{self.reachable_rpm:.0f} of the {of}: "
            f"redeploy with `-c maxConcurrency={self.suggested_concurrency}`"
        )

    def document(self, *, epoch: float, occurred_at: str, model_id: str) -> dict[str, Any]:
        return {
            "kind": "capacity_shortfall",
            "configured_rpm": self.configured_rpm,
            "target_rpm": round(self.target_rpm, 1),
            "max_concurrency": self.concurrency,
            "observed_call_s": round(self.call_s, 2),
            "reachable_rpm": round(self.reachable_rpm, 1),
            "suggested_max_concurrency": self.suggested_concurrency,
            "model_id": model_id,
            "message": self.sentence(),
            "occurred_at": occurred_at,
            "epoch": epoch,
        }


def assess(
    *,
    requests_per_minute: float,
    tokens_per_minute: float,
    tokens_per_call: float,
    concurrency: int,
    call_s: float,
    backlog: bool,
) -> Assessment:
    target = target_rpm(requests_per_minute, tokens_per_minute, tokens_per_call)
    return Assessment(
        configured_rpm=requests_per_minute,
        target_rpm=target,
        concurrency=concurrency,
        call_s=call_s,
        reachable_rpm=reachable_rpm(concurrency, call_s),
        suggested_concurrency=auto_concurrency(target, call_s),
        backlog=backlog,
    )
