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


# What the model accepts (README "Limits", sources cited there): Amazon Nova reads images up to
# 8,000 x 8,000 pixels, in a request of at most 25 MB in all (the image travels base64-encoded).
MODEL_MAX_SIDE_PX = 8_000
MODEL_MIN_SIDE_PX = 16
MODEL_MAX_REQUEST_BYTES = 25_000_000
# Room kept in the request for the prompt, the JSON around the image and the inference settings.
REQUEST_OVERHEAD_BYTES = 64 * 1024


def worst_case_png_bytes(width: int, height: int) -> int:
    """The largest PNG the resize stage can write at this size: RGBA noise that does not compress.

    Four bytes a pixel plus one filter byte a row, deflate's stored-block overhead (5 bytes per
    64 KiB) and the fixed chunks.
    """
    raw = height * (width * 4 + 1)
    return raw + 5 * (raw // 65_535 + 1) + 1024


def encoded_request_bytes(png_bytes: int) -> int:
    """Bytes of a request carrying a PNG of ``png_bytes``: base64 (4/3) plus the overhead."""
    return 4 * math.ceil(png_bytes / 3) + REQUEST_OVERHEAD_BYTES


def parse_target_size(raw: str, name: str = "target-size") -> tuple[int, int]:
    """``WIDTHxHEIGHT`` within what the model accepts; the one check synth and cold start share.

    ``name`` is how the caller knows the item (``context targetSize``, ``configuration item
    'target-size'``), so the message names what the user typed.
    """
    try:
        w_s, h_s = str(raw).lower().replace(" ", "").split("x")
        w, h = int(w_s), int(h_s)
    except ValueError as exc:
        raise ConfigError(f"{name} must look like 1280x720, got {raw!r}") from exc
    lo, hi = MODEL_MIN_SIDE_PX, MODEL_MAX_SIDE_PX
    if not (lo <= w <= hi and lo <= h <= hi):
        raise ConfigError(f"{name} must have both sides between {lo} and {hi} pixels, got {raw!r}")
    request = encoded_request_bytes(worst_case_png_bytes(w, h))
    if request > MODEL_MAX_REQUEST_BYTES:
        raise ConfigError(
            f"{name} {raw!r} is too large: an image of that size can need {request / 1e6:.1f} MB of request, "
            f"over the model's {MODEL_MAX_REQUEST_BYTES / 1e6:.0f} MB limit (at most about "
            f"{max_target_pixels() / 1e6:.1f} megapixels)"
        )
    return w, h


def max_target_pixels() -> int:
    """Pixels of the largest output whose worst-case request still fits the model's limit."""
    budget = (MODEL_MAX_REQUEST_BYTES - REQUEST_OVERHEAD_BYTES) * 3 // 4 - 1024
    return int(budget / 4.0003)


def image_spec_from(values: Mapping[str, str], memory_mb: int) -> ImageSpec:
    w, h = parse_target_size(_get(values, "target-size"), "configuration item 'target-size'")
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
