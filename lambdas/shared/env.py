"""Reading deploy-time environment variables: one set of readers for every function's settings.

Each reader takes the mapping (``os.environ`` in Lambda, a dict in tests) and raises
``ConfigError`` naming the variable, so a bad deployment fails on the first invocation with a
message an operator can act on.
"""

from __future__ import annotations

from collections.abc import Mapping

from lambdas.shared.config import ConfigError


def require(env: Mapping[str, str], name: str) -> str:
    """A variable that must be set and non-blank."""
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"environment variable {name} is missing")
    return value


def number(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    """A number within [lo, hi]; ``default`` when the variable is unset or blank (NaN is refused)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name} must be a number, got {raw!r}") from exc
    if not lo <= value <= hi:
        raise ConfigError(f"environment variable {name} must be between {lo:g} and {hi:g}, got {raw!r}")
    return value


def flag(env: Mapping[str, str], name: str) -> bool:
    """true/false (also 1/0, yes/no); unset or blank is false."""
    raw = env.get(name, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise ConfigError(f"environment variable {name} must be true or false, got {raw!r}")
