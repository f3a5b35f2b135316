"""CDK context parsing for the stack, over the shared contract's names, defaults and ranges.

Nothing here creates constructs. ``StackConfig.from_context`` turns the CDK context (``cdk.json``
plus ``cdk deploy -c name=value``) into one validated, typed object that the constructs read.
Every name the stack shares with the functions and the CLI (SSM tunables and their one parser,
prefixes, handler paths, services, environment builders, metric names, output ids, prices) comes
from ``lambdas.shared.contract``: the only thing infra imports from ``lambdas`` (standard library
only, so synth never loads Lambda code). The re-exports below keep the constructs' imports short.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lambdas.shared import contract
from lambdas.shared.contract import (
    CAPTION_HANDLER,
    CAPTION_SAFETY_MARGIN_S,
    CAPTION_SERVICE,
    CAPTIONS_PREFIX,
    CLAIM_LEASE_MARGIN_S,
    CLAIMS_PREFIX,
    DEFAULT_STACK_NAME,
    ENCODED_PREFIX,
    ERRORS_PREFIX,
    HEALTH_PREFIX,
    IMAGES_PREFIX,
    METRICS_NAMESPACE,
    NOVA_PRO_INPUT_PRICE_PER_1K,
    NOVA_PRO_OUTPUT_PRICE_PER_1K,
    RESIZE_HANDLER,
    RESIZE_POLICIES,
    RESIZE_SERVICE,
    SSM_BUCKET_PARAM,
    SSM_DLQ_URL_PARAM,
    SSM_QUEUE_URL_PARAM,
    TUNABLES,
    CaptionKnobs,
    ContractError,
    default_allowed_model_ids,
    parse_model_id_list,
)
from lambdas.shared.contract import CONNECT_TIMEOUT_S as BEDROCK_CONNECT_TIMEOUT_S

__all__ = [
    "BEDROCK_CONNECT_TIMEOUT_S",
    "CAPTIONS_PREFIX",
    "CAPTION_HANDLER",
    "CAPTION_SAFETY_MARGIN_S",
    "CAPTION_SERVICE",
    "CLAIMS_PREFIX",
    "CLAIM_LEASE_MARGIN_S",
    "DEFAULT_STACK_NAME",
    "ENCODED_PREFIX",
    "ERRORS_PREFIX",
    "HEALTH_PREFIX",
    "IMAGES_PREFIX",
    "METRICS_NAMESPACE",
    "RESIZE_HANDLER",
    "RESIZE_POLICIES",
    "RESIZE_SERVICE",
    "SSM_BUCKET_PARAM",
    "SSM_DLQ_URL_PARAM",
    "SSM_QUEUE_URL_PARAM",
    "CaptionKnobs",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LAMBDA_PACKAGE_DIR = PROJECT_ROOT / "lambdas"
LAYER_REQUIREMENTS = PROJECT_ROOT / "requirements-layer.txt"

# Lambda runtime: the newest Python that aws-cdk-lib 2.275 offers (cdk-nag AwsSolutions-L1 checks it).
# The layer's pip target must match it.
LAMBDA_PYTHON_VERSION = "3.14"
LAYER_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")

CLAIMS_EXPIRE_DAYS = 1
ABORT_MULTIPART_DAYS = 7

# SSM tunables below /<stack-name>/: parameter name -> (CDK context name, default as stored).
SSM_TUNABLES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {t.name: (t.context_key, t.default) for t in TUNABLES}
)

# Cross-region inference profiles: a "<geo>." model id is a system-defined inference profile that
# routes each request to one of these source regions, so InvokeModel must be allowed on the
# foundation model in every one of them (plus the profile itself in the stack's region). A model
# id without a geo prefix is a foundation model invoked in the stack's own region only.
# Source: Amazon Bedrock user guide, "Supported Regions and models for inference profiles"
# (Amazon Nova Pro rows).
INFERENCE_PROFILE_REGIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "us": ("us-east-1", "us-east-2", "us-west-2"),
        "eu": ("eu-central-1", "eu-west-1", "eu-west-3", "eu-north-1", "eu-south-1", "eu-south-2"),
        "apac": ("ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2"),
    }
)

_STACK_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,99}$")
_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{2,200}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_INDEX_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class ConfigurationError(ValueError):
    """Invalid CDK context; the message names the context key."""


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """The index stage (``-c search=false`` leaves all of it out): index, model, function, queue."""

    enabled: bool = True
    index_name: str = contract.DEFAULT_INDEX_NAME
    embedding_model_id: str = contract.DEFAULT_EMBEDDING_MODEL_ID
    embedding_dimension: int = contract.DEFAULT_EMBEDDING_DIMENSION
    embedding_input: str = contract.DEFAULT_EMBEDDING_INPUT
    distance_metric: str = contract.DEFAULT_DISTANCE_METRIC
    max_concurrency: int = 2
    batch_size: int = 10
    batching_window_s: int = 5  # lets a burst of captions share one PutVectors call
    memory_mb: int = 256
    timeout_s: int = 120
    max_receive_count: int = 8
    knobs: contract.IndexKnobs = field(default_factory=contract.IndexKnobs)

    @property
    def queue_visibility_timeout_s(self) -> int:
        return 6 * self.timeout_s

    def vector_bucket_name(self, stack_name: str) -> str:
        """Unique per account and region; lower-case letters, digits and hyphens, 3-63 characters."""
        return f"{stack_name.lower()}-vectors"

    @classmethod
    def from_context(cls, ctx: _Context) -> SearchConfig:
        knobs = contract.IndexKnobs(
            embedding_rpm=ctx.number(
                "embeddingRequestsPerMinute", contract.IndexKnobs().embedding_rpm, lo=0.1, hi=1e6
            )
        )
        return cls(
            enabled=ctx.flag("search", default=True),
            index_name=ctx.text("indexName", contract.DEFAULT_INDEX_NAME),
            embedding_model_id=ctx.text("embeddingModelId", contract.DEFAULT_EMBEDDING_MODEL_ID),
            embedding_dimension=ctx.integer(
                "embeddingDimension", contract.DEFAULT_EMBEDDING_DIMENSION, lo=1, hi=4096
            ),
            embedding_input=ctx.text("embeddingInput", contract.DEFAULT_EMBEDDING_INPUT).lower(),
            distance_metric=ctx.text("distanceMetric", contract.DEFAULT_DISTANCE_METRIC).lower(),
            max_concurrency=ctx.integer("indexMaxConcurrency", 2, lo=2, hi=100),
            knobs=knobs,
        )

    def validate(self, stack_name: str) -> None:
        if not self.enabled:
            return
        try:
            contract.check_embedding_model(self.embedding_model_id, self.embedding_dimension)
        except ContractError as exc:
            raise ConfigurationError(f"context embeddingModelId/embeddingDimension: {exc}") from exc
        if self.embedding_input not in contract.EMBEDDING_INPUTS:
            raise ConfigurationError(
                f"context embeddingInput must be one of {', '.join(contract.EMBEDDING_INPUTS)}"
            )
        if self.distance_metric not in contract.DISTANCE_METRICS:
            raise ConfigurationError(
                f"context distanceMetric must be one of {', '.join(contract.DISTANCE_METRICS)}"
            )
        if not _INDEX_NAME_RE.match(self.index_name):
            raise ConfigurationError(
                "context indexName must be 3-63 lower-case letters, digits, '-' or '.', "
                f"starting and ending with a letter or digit, got {self.index_name!r}"
            )
        bucket = self.vector_bucket_name(stack_name)
        if not _INDEX_NAME_RE.match(bucket) or "." in bucket:
            raise ConfigurationError(
                f"with search on, the stack name must give a valid vector bucket name (3-63 characters): "
                f"{bucket!r} is not; use a shorter stackName or -c search=false"
            )


@dataclass(frozen=True, slots=True)
class StackConfig:
    """Everything the constructs need, parsed and validated once."""

    stack_name: str = DEFAULT_STACK_NAME
    tunables: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({name: d for name, (_, d) in SSM_TUNABLES.items()})
    )
    destroy_on_removal: bool = False
    max_concurrency: int = 10  # from_context: `auto` (default) sizes it from R and the model latency
    model_latency_s: float = contract.DEFAULT_MODEL_LATENCY_S
    resize_reserved_concurrency: int = 20
    resize_memory_mb: int = 1769  # sized for a 24-megapixel upload; the image engineer measures it
    resize_timeout_s: int = 120
    caption_memory_mb: int = 512
    caption_timeout_s: int = 120
    caption_batch_size: int = 4
    max_receive_count: int = 20
    visibility_timeout_factor: int = 6
    queue_retention_days: int = 4
    dlq_retention_days: int = 14
    resize_retry_attempts: int = 2
    resize_max_event_age_hours: int = 6
    log_retention_days: int = 30
    log_level: str = "INFO"
    ssm_max_age_s: int = 60
    alarm_email: str | None = None
    queue_age_alarm_s: int = 900
    throttle_alarm_threshold: int = 10  # ModelThrottles per alarm period ...
    throttle_alarm_periods: int = 3  # ... in this many consecutive periods
    alarm_period_minutes: int = 5
    input_price_per_1k: float = NOVA_PRO_INPUT_PRICE_PER_1K
    output_price_per_1k: float = NOVA_PRO_OUTPUT_PRICE_PER_1K
    caption: CaptionKnobs = field(default_factory=CaptionKnobs)
    # issue 15: the model ids the caption role may invoke (empty: the model plus Nova Lite and Nova 2
    # Lite on its inference-profile family) and the opt-in S3 object tags
    allowed_model_ids: tuple[str, ...] = ()
    write_object_tags: bool = False
    search: SearchConfig = field(default_factory=SearchConfig)

    @property
    def ssm_prefix(self) -> str:
        """``/<stack-name>`` without a trailing slash (the SSM_PREFIX env var)."""
        return f"/{self.stack_name}"

    @property
    def model_id(self) -> str:
        return self.tunables["model-id"]

    @property
    def warnings(self) -> tuple[str, ...]:
        """Configurations that work but not well: ``cdk synth`` prints each as a warning."""
        note = contract.oversized_fleet_note(
            float(self.tunables["requests-per-minute"]), self.max_concurrency
        )
        return (note,) if note else ()

    @property
    def allowed_models(self) -> tuple[str, ...]:
        """What the caption role may invoke and the function accepts as ``model-id``."""
        return self.allowed_model_ids or default_allowed_model_ids(self.model_id)

    @property
    def queue_visibility_timeout_s(self) -> int:
        return self.visibility_timeout_factor * self.caption_timeout_s

    @property
    def dashboard_name(self) -> str:
        return f"{self.stack_name}-pipeline"

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> StackConfig:
        """Build from a context getter such as ``app.node.try_get_context``."""
        ctx = _Context(get)
        tunables = {name: ctx.text(key, default) for name, (key, default) in SSM_TUNABLES.items()}
        _validate_tunables(tunables)
        latency_s = ctx.number(
            "modelLatencySeconds", contract.expected_model_latency_s(tunables["model-id"]), lo=0.1, hi=600
        )
        max_concurrency = _max_concurrency(ctx.text("maxConcurrency", contract.AUTO), tunables, latency_s)
        config = cls(
            stack_name=ctx.text("stackName", DEFAULT_STACK_NAME),
            tunables=MappingProxyType(tunables),
            destroy_on_removal=ctx.flag("destroyOnRemoval", default=False),
            max_concurrency=max_concurrency,
            model_latency_s=latency_s,
            resize_reserved_concurrency=ctx.integer("resizeReservedConcurrency", 20, lo=1, hi=1000),
            resize_memory_mb=ctx.integer("resizeMemoryMb", 1769, lo=512, hi=10240),
            log_level=ctx.text("logLevel", "INFO").upper(),
            alarm_email=ctx.optional_text("alarmEmail"),
            queue_age_alarm_s=ctx.integer("queueAgeAlarmSeconds", 900, lo=60, hi=1_209_600),
            throttle_alarm_threshold=ctx.integer("throttleAlarmThreshold", 10, lo=1, hi=1_000_000),
            throttle_alarm_periods=ctx.integer("throttleAlarmPeriods", 3, lo=1, hi=288),
            input_price_per_1k=ctx.number("inputTokenPricePer1k", NOVA_PRO_INPUT_PRICE_PER_1K, lo=0, hi=1000),
            output_price_per_1k=ctx.number(
                "outputTokenPricePer1k", NOVA_PRO_OUTPUT_PRICE_PER_1K, lo=0, hi=1000
            ),
            allowed_model_ids=parse_model_id_list(ctx.text("allowedModelIds", "")),
            write_object_tags=ctx.flag("writeObjectTags", default=False),
            search=SearchConfig.from_context(ctx),
        )
        config.validate()
        return config

    def validate(self) -> None:
        if not _STACK_NAME_RE.match(self.stack_name):
            raise ConfigurationError(
                f"context stackName must start with a letter and contain only letters, digits and '-', "
                f"got {self.stack_name!r}"
            )
        if self.log_level not in _LOG_LEVELS:
            raise ConfigurationError(f"context logLevel must be one of {', '.join(_LOG_LEVELS)}")
        if self.alarm_email is not None and not _EMAIL_RE.match(self.alarm_email):
            raise ConfigurationError(f"context alarmEmail is not an e-mail address: {self.alarm_email!r}")
        if self.caption.claim_lease_s < self.caption_timeout_s + CLAIM_LEASE_MARGIN_S:
            raise ConfigurationError(
                f"the claim lease must outlast the caption function timeout by {CLAIM_LEASE_MARGIN_S} s"
            )
        knobs = self.caption
        worst_call_s = knobs.bedrock_max_attempts * (knobs.bedrock_read_timeout_s + BEDROCK_CONNECT_TIMEOUT_S)
        if worst_call_s + CAPTION_SAFETY_MARGIN_S > self.caption_timeout_s:
            raise ConfigurationError(
                f"Bedrock attempts x (read + connect timeout) = {worst_call_s} s plus the "
                f"{CAPTION_SAFETY_MARGIN_S} s margin must fit in the caption timeout "
                f"({self.caption_timeout_s} s)"
            )
        if self.queue_visibility_timeout_s < 6 * self.caption_timeout_s:
            raise ConfigurationError("queue visibility timeout must be at least 6x the caption timeout")
        if self.dlq_retention_days <= self.queue_retention_days:
            raise ConfigurationError("the DLQ must keep messages longer than the queue")
        _validate_tunables(self.tunables)
        _validate_allowed_models(self.model_id, self.allowed_models)
        self.search.validate(self.stack_name)


def _validate_allowed_models(model_id: str, allowed: tuple[str, ...]) -> None:
    """Every id must look like a model id; the configured one must be among them."""
    for item in allowed:
        if not _MODEL_ID_RE.match(item) or "*" in item:
            raise ConfigurationError(f"context allowedModelIds has an entry that is not a model id: {item!r}")
    if model_id not in allowed:
        raise ConfigurationError(
            f"context modelId {model_id!r} is not in context allowedModelIds ({', '.join(allowed)}): "
            "the caption role could not invoke it. Add it to allowedModelIds, or pick one of them"
        )


class _Context:
    """Typed reads of CDK context values (``-c`` values arrive as strings, cdk.json as JSON)."""

    def __init__(self, get: Callable[[str], Any]) -> None:
        self._get = get

    def _raw(self, key: str) -> Any:
        value = self._get(key)
        if isinstance(value, str) and value.strip() == "":
            return None
        return value

    def text(self, key: str, default: str) -> str:
        value = self._raw(key)
        return default if value is None else str(value).strip()

    def optional_text(self, key: str) -> str | None:
        value = self._raw(key)
        return None if value is None else str(value).strip()

    def flag(self, key: str, *, default: bool) -> bool:
        value = self._raw(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"true", "1", "yes"}:
            return True
        if text in {"false", "0", "no"}:
            return False
        raise ConfigurationError(f"context {key} must be true or false, got {value!r}")

    def number(self, key: str, default: float, *, lo: float, hi: float) -> float:
        value = self._raw(key)
        if value is None:
            return default
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"context {key} must be a number, got {value!r}") from exc
        if not math.isfinite(number) or not lo <= number <= hi:
            raise ConfigurationError(f"context {key} must be between {lo} and {hi}, got {value!r}")
        return number

    def integer(self, key: str, default: int, *, lo: int, hi: int) -> int:
        number = self.number(key, default, lo=lo, hi=hi)
        if number != int(number):
            raise ConfigurationError(f"context {key} must be a whole number, got {number!r}")
        return int(number)


def _max_concurrency(text: str, tunables: Mapping[str, str], latency_s: float) -> int:
    """``-c maxConcurrency``: a number wins; ``auto`` covers R requests/minute at the model's latency."""
    try:
        explicit = contract.parse_concurrency(text, "context maxConcurrency")
    except ContractError as exc:
        raise ConfigurationError(str(exc)) from exc
    if explicit is not None:
        return explicit
    rpm = float(tunables["requests-per-minute"])  # validated by _validate_tunables
    return contract.auto_concurrency(rpm, latency_s)


def _validate_tunables(tunables: Mapping[str, str]) -> None:
    """The contract's parser for every tunable, naming the CDK context key it came from."""
    missing = sorted(set(SSM_TUNABLES) - set(tunables))
    if missing:
        raise ConfigurationError(f"SSM tunables missing: {', '.join(missing)}")
    for name, (key, _default) in SSM_TUNABLES.items():
        try:
            contract.parse_tunable(name, tunables[name], f"context {key}")
        except ContractError as exc:
            raise ConfigurationError(str(exc)) from exc
    if not _MODEL_ID_RE.match(tunables["model-id"]) or "*" in tunables["model-id"]:
        raise ConfigurationError(f"context modelId is not a Bedrock model id: {tunables['model-id']!r}")


def split_model_id(model_id: str) -> tuple[str | None, str]:
    """``us.amazon.nova-pro-v1:0`` -> ("us", "amazon.nova-pro-v1:0"); no geo prefix -> (None, id)."""
    head, _, rest = model_id.partition(".")
    if rest and head in INFERENCE_PROFILE_REGIONS:
        return head, rest
    return None, model_id


def bedrock_invoke_resources_for(
    model_ids: tuple[str, ...], *, partition: str, region: str, account: str
) -> list[str]:
    """``bedrock_invoke_resources`` of every allowed model, in order, without repeats."""
    arns = [
        arn
        for model_id in model_ids
        for arn in bedrock_invoke_resources(model_id, partition=partition, region=region, account=account)
    ]
    return list(dict.fromkeys(arns))


def bedrock_invoke_resources(model_id: str, *, partition: str, region: str, account: str) -> list[str]:
    """The ARNs ``bedrock:InvokeModel`` must be allowed on for ``model_id``, and nothing broader.

    ``region``/``account``/``partition`` may be CDK tokens (environment-agnostic stack).
    """
    geo, foundation_model = split_model_id(model_id)
    if geo is None:
        return [f"arn:{partition}:bedrock:{region}::foundation-model/{foundation_model}"]
    profile = f"arn:{partition}:bedrock:{region}:{account}:inference-profile/{model_id}"
    models = [
        f"arn:{partition}:bedrock:{source}::foundation-model/{foundation_model}"
        for source in INFERENCE_PROFILE_REGIONS[geo]
    ]
    return [profile, *models]
