"""Fault specifications for the Bedrock stand-in: parse ``--faults`` and draw faults per call.

Syntax (comma-separated, whitespace ignored)::

    throttle=0.2,server=0.05,timeout=0.02,validation=0.01,model=0.01   shares of calls
    invalid_tool=0.3                                                    tool answers that do not validate
    ok*1,timeout*1                                                      a script: the next calls, in order
    seed=7                                                              the random draw's seed

Scripted items run first, one per model call that got past the quota, in the order written
(``ok`` lets a call through). After the script, every call draws from the shares. Both make tests
deterministic: a script fixes exactly which call fails, a seed fixes the random sequence.
Pure: no I/O.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

MAX_SCRIPT_COUNT = 10_000


class FaultKind(StrEnum):
    OK = "ok"  # scripts only: let this call through
    THROTTLE = "throttle"  # HTTP 429 ThrottlingException (injected, on top of the real quota)
    SERVER = "server"  # HTTP 503 ServiceUnavailableException / 500 InternalServerException, alternating
    TIMEOUT = "timeout"  # hold the request past the client's read timeout
    VALIDATION = "validation"  # HTTP 400 ValidationException (permanent)
    MODEL = "model"  # HTTP 424 ModelErrorException
    # A tool-use request (caption-format structured) answered with a toolUse block that does not
    # validate (alt text too long with a preamble, too few tags, a missing field); a text request
    # is answered normally.
    INVALID_TOOL = "invalid_tool"


# Order in which shares are laid out on [0, 1): fixed, so a seed gives the same sequence every run.
_SHARE_ORDER = (
    FaultKind.THROTTLE,
    FaultKind.SERVER,
    FaultKind.TIMEOUT,
    FaultKind.VALIDATION,
    FaultKind.MODEL,
    FaultKind.INVALID_TOOL,  # last: adding it left the layout of the others, and seeded runs, as they were
)


class FaultSpecError(ValueError):
    """An invalid ``--faults`` item; the message names it."""


def _empty_shares() -> Mapping[FaultKind, float]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class FaultSpec:
    shares: Mapping[FaultKind, float] = field(default_factory=_empty_shares)
    script: tuple[FaultKind, ...] = ()
    seed: int = 0

    @property
    def total_share(self) -> float:
        return sum(self.shares.values())

    @property
    def is_empty(self) -> bool:
        return not self.script and self.total_share == 0

    def describe(self) -> str:
        """The spec written back in ``--faults`` syntax (``none`` when empty)."""
        parts = [f"{kind.value}={share:g}" for kind, share in self.shares.items() if share > 0]
        script: list[str] = []
        for kind in self.script:
            if script and script[-1].split("*")[0] == kind.value:
                name, n = script[-1].split("*")
                script[-1] = f"{name}*{int(n) + 1}"
            else:
                script.append(f"{kind.value}*1")
        items = script + parts + ([f"seed={self.seed}"] if self.seed else [])
        return ",".join(items) if items else "none"


def _kind(name: str, item: str) -> FaultKind:
    try:
        return FaultKind(name.strip().lower())
    except ValueError as exc:
        allowed = ", ".join(k.value for k in FaultKind)
        raise FaultSpecError(f"unknown fault kind in {item!r}; expected one of {allowed}") from exc


def parse_faults(text: str | None) -> FaultSpec:
    """Parse a ``--faults`` value. Raises ``FaultSpecError`` naming the bad item."""
    shares: dict[FaultKind, float] = {}
    script: list[FaultKind] = []
    seed = 0
    for raw in (text or "").split(","):
        item = raw.strip()
        if not item or item.lower() == "none":
            continue
        if "*" in item:
            name, _, count_text = item.partition("*")
            kind = _kind(name, item)
            try:
                count = int(count_text)
            except ValueError as exc:
                raise FaultSpecError(f"fault count in {item!r} must be an integer") from exc
            if not 1 <= count <= MAX_SCRIPT_COUNT:
                raise FaultSpecError(f"fault count in {item!r} must be between 1 and {MAX_SCRIPT_COUNT}")
            script.extend([kind] * count)
            continue
        name, sep, value_text = item.partition("=")
        if not sep:
            raise FaultSpecError(f"fault item {item!r} must look like kind=share or kind*count")
        if name.strip().lower() == "seed":
            try:
                seed = int(value_text)
            except ValueError as exc:
                raise FaultSpecError(f"seed in {item!r} must be an integer") from exc
            continue
        kind = _kind(name, item)
        if kind is FaultKind.OK:
            raise FaultSpecError(f"{item!r}: 'ok' can only be scripted (ok*N)")
        try:
            share = float(value_text)
        except ValueError as exc:
            raise FaultSpecError(f"fault share in {item!r} must be a number") from exc
        if not 0.0 <= share <= 1.0:
            raise FaultSpecError(f"fault share in {item!r} must be between 0 and 1")
        shares[kind] = shares.get(kind, 0.0) + share
    if sum(shares.values()) > 1.0 + 1e-9:
        raise FaultSpecError(f"fault shares add up to {sum(shares.values()):g}, more than 1")
    ordered = {kind: shares[kind] for kind in _SHARE_ORDER if kind in shares}
    return FaultSpec(shares=MappingProxyType(ordered), script=tuple(script), seed=seed)


class FaultPlan:
    """Thread-safe source of faults for successive model calls."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self._lock = threading.Lock()
        self._script = deque(spec.script)
        self._rng = random.Random(spec.seed)  # noqa: S311 - fault injection, not cryptography

    def next_fault(self) -> FaultKind | None:
        """The fault for the next call that got past the quota, or None to let it through."""
        with self._lock:
            if self._script:
                kind = self._script.popleft()
                return None if kind is FaultKind.OK else kind
            if not self.spec.shares:
                return None
            draw = self._rng.random()
        edge = 0.0
        for kind, share in self.spec.shares.items():
            edge += share
            if draw < edge:
                return kind
        return None

    @property
    def script_remaining(self) -> int:
        with self._lock:
            return len(self._script)
