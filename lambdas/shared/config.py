"""Typed, validated configuration values. Pure: parsing from plain mappings, no I/O.

``settings.py`` fills these from environment variables and SSM; the domain code takes them as
arguments. Names of SSM parameters (relative to ``/<stack-name>/``) and their defaults live here,
and the CDK app keeps an independent copy that a test compares with this one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_PROMPT = "Generate a detailed description of the image."
DEFAULT_MODEL_ID = "us.amazon.nova-pro-v1:0"

# SSM parameter name (below /<stack-name>/) -> default value as stored (strings).
SSM_DEFAULTS: dict[str, str] = {
    "model-id": DEFAULT_MODEL_ID,
    "prompt": DEFAULT_PROMPT,
    "max-tokens": "300",
    "temperature": "0.3",
    "top-p": "0.1",
    "top-k": "20",
    "requests-per-minute": "100",
    "tokens-per-minute": "400000",
    "target-size": "1280x720",
    "resize-policy": "pad",
}
# Not tunables, but provisioned under the same prefix by the stack (and the local runtime):
# the name the notebook series reads, and what the operator CLI needs to find the queues.
SSM_BUCKET_PARAM = "s3-bucket"
SSM_QUEUE_URL_PARAM = "queue-url"
SSM_DLQ_URL_PARAM = "dlq-url"


class ConfigError(ValueError):
    """Missing or invalid configuration; the message names the item."""


class ResizePolicy(StrEnum):
    PAD = "pad"  # keep aspect ratio, letterbox (default)
    CROP = "crop"  # cover, centred
    STRETCH = "stretch"  # what the notebook did


@dataclass(frozen=True, slots=True)
class ImageSpec:
    width: int = 1280
    height: int = 720
    policy: ResizePolicy = ResizePolicy.PAD
    max_pixels: int = 89_478_485  # Pillow's own default bomb threshold until memory is known


@dataclass(frozen=True, slots=True)
class ModelSpec:
    model_id: str = DEFAULT_MODEL_ID
    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 300
    temperature: float = 0.3
    top_p: float = 0.1
    top_k: int = 20


@dataclass(frozen=True, slots=True)
class PacingSpec:
    requests_per_minute: float = 100.0
    tokens_per_minute: float = 400_000.0
    max_concurrency: int = 2

    @property
    def worker_rpm(self) -> float:
        """Each worker's share of the account quota: R / C."""
        return self.requests_per_minute / self.max_concurrency

    @property
    def worker_tpm(self) -> float:
        return self.tokens_per_minute / self.max_concurrency


def pixel_limit_for_memory(memory_mb: int) -> int:
    """Largest pixel count we agree to decode in a function with ``memory_mb`` of memory.

    Budget: about 60% of memory for image buffers at ~8 bytes per source pixel (a decoded RGBA
    frame plus one converted copy); the rest is the runtime, the PNG encoder and base64 output.
    """
    if memory_mb <= 0:
        raise ConfigError(f"memory size must be positive, got {memory_mb}")
    return int(memory_mb * 1024 * 1024 * 0.6 // 8)


def _get(values: Mapping[str, str], name: str) -> str:
    if name in values and values[name] is not None and str(values[name]).strip() != "":
        return str(values[name]).strip()
    if name in SSM_DEFAULTS:
        return SSM_DEFAULTS[name]
    raise ConfigError(f"configuration item {name!r} is missing")


def _number(values: Mapping[str, str], name: str, lo: float, hi: float, *, integer: bool) -> float:
    raw = _get(values, name)
    try:
        value = int(raw) if integer else float(raw)
    except ValueError as exc:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"configuration item {name!r} must be {kind}, got {raw!r}") from exc
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ConfigError(f"configuration item {name!r} must be between {lo} and {hi}, got {raw!r}")
    return value


def parse_target_size(raw: str) -> tuple[int, int]:
    try:
        w_s, h_s = raw.lower().replace(" ", "").split("x")
        w, h = int(w_s), int(h_s)
    except ValueError as exc:
        raise ConfigError(f"configuration item 'target-size' must look like 1280x720, got {raw!r}") from exc
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise ConfigError(f"configuration item 'target-size' out of range 16..8192, got {raw!r}")
    return w, h


def image_spec_from(values: Mapping[str, str], memory_mb: int) -> ImageSpec:
    w, h = parse_target_size(_get(values, "target-size"))
    raw_policy = _get(values, "resize-policy").lower()
    try:
        policy = ResizePolicy(raw_policy)
    except ValueError as exc:
        allowed = ", ".join(p.value for p in ResizePolicy)
        raise ConfigError(
            f"configuration item 'resize-policy' must be one of {allowed}, got {raw_policy!r}"
        ) from exc
    return ImageSpec(width=w, height=h, policy=policy, max_pixels=pixel_limit_for_memory(memory_mb))


def model_spec_from(values: Mapping[str, str]) -> ModelSpec:
    return ModelSpec(
        model_id=_get(values, "model-id"),
        prompt=_get(values, "prompt"),
        max_tokens=int(_number(values, "max-tokens", 1, 10_000, integer=True)),
        temperature=_number(values, "temperature", 0.0, 1.0, integer=False),
        top_p=_number(values, "top-p", 0.0, 1.0, integer=False),
        top_k=int(_number(values, "top-k", 1, 500, integer=True)),
    )


def pacing_spec_from(values: Mapping[str, str], max_concurrency: int) -> PacingSpec:
    if max_concurrency < 1:
        raise ConfigError(f"configuration item 'MAX_CONCURRENCY' must be >= 1, got {max_concurrency}")
    return PacingSpec(
        requests_per_minute=_number(values, "requests-per-minute", 0.1, 1_000_000, integer=False),
        tokens_per_minute=_number(values, "tokens-per-minute", 1, 1_000_000_000, integer=False),
        max_concurrency=max_concurrency,
    )
