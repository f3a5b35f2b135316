"""Stage settings: environment variables (deploy-time) + SSM parameters (runtime tunables).

Parsed once per execution environment for the environment part; SSM values come through
Powertools parameters with a cache (``SSM_MAX_AGE_SECONDS``), so a prompt, model or pacing change
in SSM takes effect within that time without a redeploy. Missing or invalid configuration raises
``ConfigError`` naming the item on the first invocation (the cold start).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from lambdas.shared.config import (
    SSM_DEFAULTS,
    ConfigError,
    FolderPrompt,
    ImageSpec,
    ModelSpec,
    PacingSpec,
    folder_prompts_from,
    image_spec_from,
    model_spec_from,
    pacing_spec_from,
)
from lambdas.shared.contract import (
    ENV_ALLOWED_MODEL_IDS,
    ENV_BACKOFF_BASE,
    ENV_BACKOFF_MAX,
    ENV_BEDROCK_MAX_ATTEMPTS,
    ENV_BEDROCK_READ_TIMEOUT,
    ENV_BUCKET,
    ENV_CLAIM_LEASE,
    ENV_MAX_CONCURRENCY,
    ENV_MEMORY,
    ENV_MODEL_ERROR_ATTEMPTS,
    ENV_QUEUE_URL,
    ENV_SSM_MAX_AGE,
    ENV_SSM_PREFIX,
    ENV_WRITE_OBJECT_TAGS,
    CaptionKnobs,
    parse_model_id_list,
)
from lambdas.shared.env import flag, number, require

_KNOBS = CaptionKnobs()  # the stack's defaults, also when a variable is unset


@dataclass(frozen=True, slots=True)
class EnvSettings:
    bucket: str
    ssm_prefix: str
    ssm_max_age_s: int
    memory_mb: int
    queue_url: str | None
    max_concurrency: int
    backoff_base_s: float
    backoff_max_s: float
    model_error_max_attempts: int
    bedrock_read_timeout_s: float
    bedrock_max_attempts: int
    claim_lease_s: float
    allowed_model_ids: tuple[str, ...] = ()  # empty: not restricted (the stack always sets it)
    write_object_tags: bool = False


@dataclass(frozen=True, slots=True)
class ResizeSettings:
    bucket: str
    queue_url: str
    image: ImageSpec


@dataclass(frozen=True, slots=True)
class CaptionSettings:
    bucket: str
    model: ModelSpec
    pacing: PacingSpec
    backoff_base_s: float
    backoff_max_s: float
    model_error_max_attempts: int
    bedrock_read_timeout_s: float
    bedrock_max_attempts: int
    claim_lease_s: float
    prompts: tuple[FolderPrompt, ...] = ()  # /<stack>/prompts/<folder>, deepest first
    write_object_tags: bool = False


def env_settings_from(env: Mapping[str, str]) -> EnvSettings:
    """Parse and validate the deploy-time part (pure over the given mapping)."""
    prefix = require(env, ENV_SSM_PREFIX)
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise ConfigError(f"environment variable {ENV_SSM_PREFIX} must look like /stack-name, got {prefix!r}")
    return EnvSettings(
        bucket=require(env, ENV_BUCKET),
        ssm_prefix=prefix,
        ssm_max_age_s=int(number(env, ENV_SSM_MAX_AGE, 60, 0, 3600)),
        memory_mb=int(number(env, ENV_MEMORY, 1769, 128, 10240)),
        queue_url=env.get(ENV_QUEUE_URL, "").strip() or None,
        max_concurrency=int(number(env, ENV_MAX_CONCURRENCY, 2, 1, 1000)),
        backoff_base_s=number(env, ENV_BACKOFF_BASE, _KNOBS.throttle_backoff_base_s, 0, 43_200),
        backoff_max_s=number(env, ENV_BACKOFF_MAX, _KNOBS.throttle_backoff_max_s, 0, 43_200),
        model_error_max_attempts=int(
            number(env, ENV_MODEL_ERROR_ATTEMPTS, _KNOBS.model_error_max_attempts, 1, 100)
        ),
        bedrock_read_timeout_s=number(env, ENV_BEDROCK_READ_TIMEOUT, _KNOBS.bedrock_read_timeout_s, 1, 900),
        bedrock_max_attempts=int(number(env, ENV_BEDROCK_MAX_ATTEMPTS, _KNOBS.bedrock_max_attempts, 1, 10)),
        claim_lease_s=number(env, ENV_CLAIM_LEASE, _KNOBS.claim_lease_s, 1, 43_200),
        allowed_model_ids=parse_model_id_list(env.get(ENV_ALLOWED_MODEL_IDS, "")),
        write_object_tags=flag(env, ENV_WRITE_OBJECT_TAGS),
    )


def check_model_allowed(model: ModelSpec, allowed: tuple[str, ...]) -> None:
    """Refuse a model id the caption role may not invoke, naming the list and how to widen it.

    Checked whenever settings are read (the first invocation, and again after an SSM change is
    picked up), so a model-id outside the list fails fast with this message instead of every call
    failing later with AccessDenied.
    """
    if allowed and model.model_id not in allowed:
        raise ConfigError(
            f"configuration item 'model-id' is {model.model_id!r}, which the caption function may not "
            f"invoke: its role allows only {', '.join(allowed)} ({ENV_ALLOWED_MODEL_IDS}). Set "
            f"model-id to one of them, or redeploy with -c allowedModelIds=... including it"
        )


@lru_cache(maxsize=1)
def env_settings() -> EnvSettings:
    return env_settings_from(os.environ)


def ssm_values(prefix: str, max_age_s: int) -> dict[str, str]:
    """All parameters under the prefix (names relative to it), cached by Powertools."""
    from aws_lambda_powertools.utilities import parameters

    try:
        values = parameters.get_parameters(prefix, max_age=max_age_s)
    except parameters.exceptions.GetParameterError as exc:
        raise ConfigError(f"cannot read SSM parameters under {prefix}: {exc}") from exc
    out = {str(k).lstrip("/"): str(v) for k, v in dict(values).items()}
    if not out:
        # Nothing at all under the prefix: almost always a wrong SSM_PREFIX or stack name.
        raise ConfigError(f"no SSM parameters found under {prefix} (is {ENV_SSM_PREFIX} right?)")
    missing = [f"{prefix}/{name}" for name in SSM_DEFAULTS if name not in out]
    if missing:
        raise ConfigError(f"SSM parameter(s) missing: {', '.join(missing)}")
    return out


def resize_settings() -> ResizeSettings:
    env = env_settings()
    if env.queue_url is None:
        raise ConfigError(f"environment variable {ENV_QUEUE_URL} is missing")
    values = ssm_values(env.ssm_prefix, env.ssm_max_age_s)
    return ResizeSettings(
        bucket=env.bucket, queue_url=env.queue_url, image=image_spec_from(values, env.memory_mb)
    )


def caption_settings() -> CaptionSettings:
    env = env_settings()
    values = ssm_values(env.ssm_prefix, env.ssm_max_age_s)
    model = model_spec_from(values)
    check_model_allowed(model, env.allowed_model_ids)
    return CaptionSettings(
        bucket=env.bucket,
        model=model,
        pacing=pacing_spec_from(values, env.max_concurrency),
        backoff_base_s=env.backoff_base_s,
        backoff_max_s=env.backoff_max_s,
        model_error_max_attempts=env.model_error_max_attempts,
        bedrock_read_timeout_s=env.bedrock_read_timeout_s,
        bedrock_max_attempts=env.bedrock_max_attempts,
        claim_lease_s=env.claim_lease_s,
        prompts=folder_prompts_from(values),
        write_object_tags=env.write_object_tags,
    )
