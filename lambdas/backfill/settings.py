"""The backfill functions' settings: environment (deploy time) + the model spec from SSM."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

from lambdas.shared.config import ConfigError, FolderPrompt, ModelSpec, folder_prompts_from, model_spec_from
from lambdas.shared.contract import (
    ENV_BATCH_LIMITS,
    ENV_BATCH_ROLE_ARN,
    ENV_BUCKET,
    ENV_QUEUE_URL,
    ENV_SSM_MAX_AGE,
    ENV_SSM_PREFIX,
    BatchLimits,
    CaptionKnobs,
    parse_batch_limits,
)
from lambdas.shared.env import number, require
from lambdas.shared.settings import ssm_values


@dataclass(frozen=True, slots=True)
class BackfillEnv:
    bucket: str
    queue_url: str
    role_arn: str
    ssm_prefix: str
    ssm_max_age_s: int
    limits: BatchLimits
    # How old an online claim must be before a backfill takes it over: the caption function's lease.
    online_claim_lease_s: float = CaptionKnobs().claim_lease_s

    @property
    def stack_name(self) -> str:
        return self.ssm_prefix.strip("/") or "imgcap"


def backfill_env_from(env: Mapping[str, str]) -> BackfillEnv:
    try:
        raw_limits = json.loads(env.get(ENV_BATCH_LIMITS, "") or "{}")
    except ValueError as exc:
        raise ConfigError(f"environment variable {ENV_BATCH_LIMITS} is not JSON: {exc}") from exc
    if not isinstance(raw_limits, dict):
        raise ConfigError(f"environment variable {ENV_BATCH_LIMITS} must be a JSON object")
    return BackfillEnv(
        bucket=require(env, ENV_BUCKET),
        queue_url=require(env, ENV_QUEUE_URL),
        role_arn=require(env, ENV_BATCH_ROLE_ARN),
        ssm_prefix=require(env, ENV_SSM_PREFIX),
        ssm_max_age_s=int(number(env, ENV_SSM_MAX_AGE, 60, 0, 3600)),
        limits=parse_batch_limits(raw_limits, label=f"environment variable {ENV_BATCH_LIMITS}:"),
    )


@lru_cache(maxsize=1)
def backfill_env() -> BackfillEnv:
    return backfill_env_from(os.environ)


@dataclass(frozen=True, slots=True)
class BatchModel:
    """The stack's model spec (a batch job has no service tier) and its folder prompt rules."""

    spec: ModelSpec
    rules: tuple[FolderPrompt, ...] = ()


def model_spec(env: BackfillEnv) -> BatchModel:
    values = ssm_values(env.ssm_prefix, env.ssm_max_age_s)
    return BatchModel(replace(model_spec_from(values), service_tier="default"), folder_prompts_from(values))
