"""The index function's settings: environment variables only (all deploy-time), parsed once.

The model and dimension are fixed at deploy time because they define the index's vector space;
nothing here reads SSM, so the function needs no SSM permissions. Invalid values raise
``ConfigError`` naming the variable on the first invocation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from lambdas.shared.config import ConfigError
from lambdas.shared.contract import (
    EMBEDDING_INPUTS,
    ENV_BACKOFF_BASE,
    ENV_BACKOFF_MAX,
    ENV_BEDROCK_MAX_ATTEMPTS,
    ENV_BEDROCK_READ_TIMEOUT,
    ENV_BUCKET,
    ENV_EMBEDDING_DIMENSION,
    ENV_EMBEDDING_INPUT,
    ENV_EMBEDDING_MODEL,
    ENV_EMBEDDING_RPM,
    ENV_INDEX_NAME,
    ENV_MAX_CONCURRENCY,
    ENV_VECTOR_BUCKET,
    ContractError,
    IndexKnobs,
    check_embedding_model,
)
from lambdas.shared.env import number, require

_KNOBS = IndexKnobs()


@dataclass(frozen=True, slots=True)
class IndexSettings:
    bucket: str
    vector_bucket: str
    index_name: str
    embedding_model_id: str
    embedding_dimension: int
    embedding_input: str
    max_concurrency: int
    embedding_rpm: float
    backoff_base_s: float
    backoff_max_s: float
    bedrock_read_timeout_s: float
    bedrock_max_attempts: int

    @property
    def worker_rpm(self) -> float:
        """This worker's share of the embeddings quota."""
        return self.embedding_rpm / max(self.max_concurrency, 1)


def index_settings_from(env: Mapping[str, str]) -> IndexSettings:
    model_id = require(env, ENV_EMBEDDING_MODEL)
    dimension = int(number(env, ENV_EMBEDDING_DIMENSION, 0, 1, 4096))
    try:
        check_embedding_model(model_id, dimension)
    except ContractError as exc:
        raise ConfigError(f"{ENV_EMBEDDING_MODEL}/{ENV_EMBEDDING_DIMENSION}: {exc}") from exc
    embedding_input = require(env, ENV_EMBEDDING_INPUT).lower()
    if embedding_input not in EMBEDDING_INPUTS:
        raise ConfigError(
            f"environment variable {ENV_EMBEDDING_INPUT} must be one of {', '.join(EMBEDDING_INPUTS)}, "
            f"got {embedding_input!r}"
        )
    return IndexSettings(
        bucket=require(env, ENV_BUCKET),
        vector_bucket=require(env, ENV_VECTOR_BUCKET),
        index_name=require(env, ENV_INDEX_NAME),
        embedding_model_id=model_id,
        embedding_dimension=dimension,
        embedding_input=embedding_input,
        max_concurrency=int(number(env, ENV_MAX_CONCURRENCY, 2, 1, 1000)),
        embedding_rpm=number(env, ENV_EMBEDDING_RPM, _KNOBS.embedding_rpm, 0.1, 1_000_000),
        backoff_base_s=number(env, ENV_BACKOFF_BASE, _KNOBS.throttle_backoff_base_s, 0, 43_200),
        backoff_max_s=number(env, ENV_BACKOFF_MAX, _KNOBS.throttle_backoff_max_s, 0, 43_200),
        bedrock_read_timeout_s=number(env, ENV_BEDROCK_READ_TIMEOUT, _KNOBS.bedrock_read_timeout_s, 1, 900),
        bedrock_max_attempts=int(number(env, ENV_BEDROCK_MAX_ATTEMPTS, _KNOBS.bedrock_max_attempts, 1, 10)),
    )


@lru_cache(maxsize=1)
def index_settings() -> IndexSettings:
    return index_settings_from(os.environ)
