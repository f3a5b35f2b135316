"""Typed, validated configuration values. Pure: parsing from plain mappings, no I/O.

``settings.py`` fills these from environment variables and SSM; the domain code takes them as
arguments. The names, defaults and ranges of the SSM parameters live in ``contract`` (shared with
the CDK app); this module turns their values into the typed specs the stages use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from lambdas.shared import contract
from lambdas.shared.contract import (
    SSM_BUCKET_PARAM,
    SSM_DEFAULTS,
    SSM_DLQ_URL_PARAM,
    SSM_QUEUE_URL_PARAM,
)

__all__ = ["SSM_BUCKET_PARAM", "SSM_DEFAULTS", "SSM_DLQ_URL_PARAM", "SSM_QUEUE_URL_PARAM"]

DEFAULT_PROMPT = SSM_DEFAULTS["prompt"]
DEFAULT_MODEL_ID = SSM_DEFAULTS["model-id"]

# Missing or invalid configuration; the message names the item (the contract's own error).
ConfigError = contract.ContractError


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
    # issue 15: "text" (the notebook's one paragraph) or "structured" (one forced tool-use call)
    caption_format: str = "text"
    service_tier: str = "default"  # Converse serviceTier: default | flex | priority
    prompt_source: str = "prompt"  # the SSM parameter the prompt came from (relative to the prefix)

    @property
    def structured(self) -> bool:
        return self.caption_format == "structured"


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


def _number(values: Mapping[str, str], name: str) -> float:
    value = contract.parse_tunable(name, _get(values, name))
    assert isinstance(value, int | float)
    return value


def image_spec_from(values: Mapping[str, str], memory_mb: int) -> ImageSpec:
    w, h = contract.parse_target_size(_get(values, "target-size"), "configuration item 'target-size'")
    policy = ResizePolicy(str(contract.parse_tunable("resize-policy", _get(values, "resize-policy"))))
    return ImageSpec(width=w, height=h, policy=policy, max_pixels=pixel_limit_for_memory(memory_mb))


def model_spec_from(values: Mapping[str, str]) -> ModelSpec:
    return ModelSpec(
        model_id=_get(values, "model-id"),
        prompt=_get(values, "prompt"),
        max_tokens=int(_number(values, "max-tokens")),
        temperature=_number(values, "temperature"),
        top_p=_number(values, "top-p"),
        top_k=int(_number(values, "top-k")),
        caption_format=str(contract.parse_tunable("caption-format", _get(values, "caption-format"))),
        service_tier=str(contract.parse_tunable("service-tier", _get(values, "service-tier"))),
    )


def pacing_spec_from(values: Mapping[str, str], max_concurrency: int) -> PacingSpec:
    if max_concurrency < 1:
        raise ConfigError(f"configuration item 'MAX_CONCURRENCY' must be >= 1, got {max_concurrency}")
    return PacingSpec(
        requests_per_minute=_number(values, "requests-per-minute"),
        tokens_per_minute=_number(values, "tokens-per-minute"),
        max_concurrency=max_concurrency,
    )


# --------------------------------------------------------------------------- prompts per folder (issue 15)


@dataclass(frozen=True, slots=True)
class FolderPrompt:
    """``/<stack>/prompts/<folder>``: the prompt (and optionally the format) for images under it."""

    folder: str  # the path below images/, no slash at either end: "products" or "products/shoes"
    prompt: str  # a template: {filename} and {folder} are filled in per image
    caption_format: str | None = None  # None: the stack's caption-format

    @property
    def source(self) -> str:
        """The parameter name relative to the prefix, as a caption record's ``prompt_source``."""
        return f"{contract.PROMPTS_PARAM_PATH}/{self.folder}"


def folder_prompt_from(folder: str, raw: str) -> FolderPrompt:
    """Plain text is the prompt; a JSON object ``{"prompt": ..., "format": ...}`` also sets the format."""
    label = f"configuration item '{contract.PROMPTS_PARAM_PATH}/{folder}'"
    text = str(raw).strip()
    if not text:
        raise ConfigError(f"{label} must not be empty")
    if not text.startswith("{"):
        return FolderPrompt(folder, text)
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{label} starts with '{{' but is not a JSON object: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("prompt"), str):
        raise ConfigError(f'{label} as JSON must be an object with a "prompt" string')
    unknown = sorted(set(document) - {"prompt", "format"})
    if unknown:
        raise ConfigError(f"{label} has unknown field(s): {', '.join(unknown)} (allowed: prompt, format)")
    prompt = document["prompt"].strip()
    if not prompt:
        raise ConfigError(f"{label} has an empty prompt")
    fmt = document.get("format")
    if fmt is not None:
        fmt = str(contract.parse_tunable("caption-format", fmt, f"{label} format"))
    return FolderPrompt(folder, prompt, fmt)


def folder_prompts_from(values: Mapping[str, str]) -> tuple[FolderPrompt, ...]:
    """Every ``prompts/<folder>`` parameter, the deepest folder first (the matching order)."""
    prefix = contract.PROMPTS_PARAM_PATH + "/"
    rules = []
    for name, raw in values.items():
        if not name.startswith(prefix):
            continue
        folder = name[len(prefix) :].strip("/")
        if folder:
            rules.append(folder_prompt_from(folder, raw))
    return tuple(sorted(rules, key=lambda r: (-r.folder.count("/"), -len(r.folder), r.folder)))
