"""Every name the parts share, in one standard-library module: the stack, the functions, the CLI.

``infra/`` (CDK), ``imgcap/`` (CLI and local runtime) and ``lambdas/`` all import this module, and
it imports nothing but the standard library, so the CDK app can use it without loading Lambda code.
What lives here (docs/architecture.md says where each new thing goes):

- the default stack name, the metric namespace, the service names and handler entry points;
- bucket prefixes (``keys`` builds keys from them);
- the SSM tunables: name, CDK context key, default, allowed values, and the one parser that synth
  and cold start both use;
- environment variable names and one builder per function of its environment (the stack and the
  local runtime call the same builder, a test compares them);
- metric names (the handlers emit them, the dashboard and alarms read them);
- stack output ids; prices (one row per model, tier factors) and token estimates;
- the structured caption's JSON Schema, the per-folder prompt path, the object-tag limits and the
  default list of models the caption role may invoke.

Over 500 lines on purpose: one fact, one place. Splitting it would give infra two modules to import
from lambdas, and every part a second place to look for a shared name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

DEFAULT_STACK_NAME = "ImageCaptioning"
METRICS_NAMESPACE = "ImageCaptioning"

# --------------------------------------------------------------------------- functions

RESIZE_SERVICE = "resize-encode"
CAPTION_SERVICE = "caption"
RESIZE_HANDLER = "lambdas.resize.handler.lambda_handler"
CAPTION_HANDLER = "lambdas.caption.handler.lambda_handler"

# --------------------------------------------------------------------------- bucket layout

IMAGES_PREFIX = "images/"  # the only prefix that triggers the pipeline
ENCODED_PREFIX = "base64_images/"
CAPTIONS_PREFIX = "captions/"
ERRORS_PREFIX = "errors/"
CLAIMS_PREFIX = "claims/"
HEALTH_PREFIX = "health/"  # documents about the pipeline itself, not about an image

# --------------------------------------------------------------------------- SSM tunables


class ContractError(ValueError):
    """A value outside what the contract allows; the message names the item as the caller knows it."""


@dataclass(frozen=True, slots=True)
class Tunable:
    """One SSM parameter below ``/<stack-name>/`` that may change without a redeploy."""

    name: str  # the SSM parameter name
    context_key: str  # the CDK context key that sets its deployed value
    default: str  # as stored in SSM
    kind: str = "text"  # text | int | float | choice | size
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()


# What the model accepts (README "Limits", with sources): Amazon Nova reads images up to
# 8,000 x 8,000 pixels, in a request of at most 25 MB in all (the image travels base64-encoded).
MODEL_MAX_SIDE_PX = 8_000
MODEL_MIN_SIDE_PX = 16
MODEL_MAX_REQUEST_BYTES = 25_000_000
REQUEST_OVERHEAD_BYTES = 64 * 1024  # the prompt, the JSON around the image, the settings

RESIZE_POLICIES = ("pad", "crop", "stretch")
# Issue 15: one paragraph (the notebook's behaviour) or one tool-use call returning the structured
# record (CAPTION_OUTPUT_SCHEMA below); and the Bedrock service tier each Converse call asks for.
CAPTION_FORMATS = ("text", "structured")
SERVICE_TIERS = ("default", "flex", "priority")

TUNABLES: tuple[Tunable, ...] = (
    Tunable("model-id", "modelId", "us.amazon.nova-pro-v1:0"),
    Tunable("prompt", "prompt", "Generate a detailed description of the image."),
    Tunable("max-tokens", "maxTokens", "300", "int", 1, 10_000),
    Tunable("temperature", "temperature", "0.3", "float", 0.0, 1.0),
    Tunable("top-p", "topP", "0.1", "float", 0.0, 1.0),
    Tunable("top-k", "topK", "20", "int", 1, 500),
    Tunable("requests-per-minute", "requestsPerMinute", "100", "float", 0.1, 1_000_000),
    Tunable("tokens-per-minute", "tokensPerMinute", "400000", "float", 1, 1_000_000_000),
    Tunable("target-size", "targetSize", "1280x720", "size", MODEL_MIN_SIDE_PX, MODEL_MAX_SIDE_PX),
    Tunable("resize-policy", "resizePolicy", "pad", "choice", choices=RESIZE_POLICIES),
    # issue 15: structured captions and the service tier
    Tunable("caption-format", "captionFormat", "text", "choice", choices=CAPTION_FORMATS),
    Tunable("service-tier", "serviceTier", "default", "choice", choices=SERVICE_TIERS),
)
TUNABLES_BY_NAME: Mapping[str, Tunable] = MappingProxyType({t.name: t for t in TUNABLES})
SSM_DEFAULTS: Mapping[str, str] = MappingProxyType({t.name: t.default for t in TUNABLES})

# Provisioned facts under the same prefix (not tunables): the bucket name the notebook series reads,
# and the queue URLs the operator CLI needs.
SSM_BUCKET_PARAM = "s3-bucket"
SSM_QUEUE_URL_PARAM = "queue-url"
SSM_DLQ_URL_PARAM = "dlq-url"


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


def max_target_pixels() -> int:
    """Pixels of the largest output whose worst-case request still fits the model's limit."""
    budget = (MODEL_MAX_REQUEST_BYTES - REQUEST_OVERHEAD_BYTES) * 3 // 4 - 1024
    return int(budget / 4.0003)


def parse_target_size(raw: str, label: str = "target-size") -> tuple[int, int]:
    """``WIDTHxHEIGHT`` within what the model accepts."""
    try:
        w_s, h_s = str(raw).lower().replace(" ", "").split("x")
        w, h = int(w_s), int(h_s)
    except ValueError as exc:
        raise ContractError(f"{label} must look like 1280x720, got {raw!r}") from exc
    lo, hi = MODEL_MIN_SIDE_PX, MODEL_MAX_SIDE_PX
    if not (lo <= w <= hi and lo <= h <= hi):
        raise ContractError(f"{label} must have both sides between {lo} and {hi} pixels, got {raw!r}")
    request = encoded_request_bytes(worst_case_png_bytes(w, h))
    if request > MODEL_MAX_REQUEST_BYTES:
        raise ContractError(
            f"{label} {raw!r} is too large: an image of that size can need {request / 1e6:.1f} MB of "
            f"request, over the model's {MODEL_MAX_REQUEST_BYTES / 1e6:.0f} MB limit (at most about "
            f"{max_target_pixels() / 1e6:.1f} megapixels)"
        )
    return w, h


def parse_tunable(name: str, raw: object, label: str | None = None) -> object:
    """The typed value of tunable ``name``; the one validation synth and the functions share.

    ``label`` is how the caller's user knows the item (``context maxTokens``, ``configuration item
    'max-tokens'``). Returns str, int, float or (width, height).
    """
    tunable = TUNABLES_BY_NAME[name]
    label = label or f"configuration item {name!r}"
    text = "" if raw is None else str(raw).strip()
    if text == "":
        raise ContractError(f"{label} must not be empty")
    if tunable.kind == "size":
        return parse_target_size(text, label)
    if tunable.kind == "choice":
        value = text.lower()
        if value not in tunable.choices:
            raise ContractError(f"{label} must be one of {', '.join(tunable.choices)}, got {text!r}")
        return value
    if tunable.kind in ("int", "float"):
        integer = tunable.kind == "int"
        try:
            number: float = int(text) if integer else float(text)
        except ValueError as exc:
            kind = "a whole number" if integer else "a number"
            raise ContractError(f"{label} must be {kind}, got {text!r}") from exc
        lo = -math.inf if tunable.lo is None else tunable.lo
        hi = math.inf if tunable.hi is None else tunable.hi
        if not math.isfinite(number) or not lo <= number <= hi:
            raise ContractError(f"{label} must be between {_num(lo)} and {_num(hi)}, got {text!r}")
        return number
    return text


def _num(value: float) -> str:
    return f"{value:g}" if value != int(value) else f"{int(value):,}"


# --------------------------------------------------------------------------- environment

ENV_BUCKET = "BUCKET_NAME"
ENV_QUEUE_URL = "QUEUE_URL"
ENV_SSM_PREFIX = "SSM_PREFIX"
ENV_SSM_MAX_AGE = "SSM_MAX_AGE_SECONDS"
ENV_MAX_CONCURRENCY = "MAX_CONCURRENCY"
ENV_BACKOFF_BASE = "THROTTLE_BACKOFF_BASE_SECONDS"
ENV_BACKOFF_MAX = "THROTTLE_BACKOFF_MAX_SECONDS"
ENV_MODEL_ERROR_ATTEMPTS = "MODEL_ERROR_MAX_ATTEMPTS"
ENV_BEDROCK_READ_TIMEOUT = "BEDROCK_READ_TIMEOUT_SECONDS"
ENV_BEDROCK_MAX_ATTEMPTS = "BEDROCK_MAX_ATTEMPTS"
ENV_CLAIM_LEASE = "CLAIM_LEASE_SECONDS"
ENV_MEMORY = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"  # set by Lambda itself
ENV_SERVICE = "POWERTOOLS_SERVICE_NAME"
ENV_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
ENV_LOG_LEVEL = "POWERTOOLS_LOG_LEVEL"
# issue 15: the model ids the caption role may invoke (comma-separated) and the opt-in object tags
ENV_ALLOWED_MODEL_IDS = "ALLOWED_MODEL_IDS"
ENV_WRITE_OBJECT_TAGS = "WRITE_OBJECT_TAGS"


@dataclass(frozen=True, slots=True)
class CaptionKnobs:
    """Deploy-time knobs of the caption function (environment variables)."""

    throttle_backoff_base_s: float = 10
    throttle_backoff_max_s: float = 300
    model_error_max_attempts: int = 3
    # Worst case of one call: attempts x (connect 5 s + read timeout) = 2 x 55 = 110 s, inside the
    # 120 s function timeout with its 5 s margin; the function also cuts each call to its time left.
    bedrock_read_timeout_s: float = 50
    bedrock_max_attempts: int = 2
    claim_lease_s: float = 900


def _seconds(value: float) -> str:
    return f"{value:g}"


def common_environment(
    *, service: str, bucket: str, ssm_prefix: str, ssm_max_age_s: int, log_level: str
) -> dict[str, str]:
    return {
        ENV_SERVICE: service,
        ENV_NAMESPACE: METRICS_NAMESPACE,
        ENV_LOG_LEVEL: log_level,
        ENV_BUCKET: bucket,
        ENV_SSM_PREFIX: ssm_prefix,
        ENV_SSM_MAX_AGE: str(ssm_max_age_s),
    }


def resize_environment(
    *, bucket: str, queue_url: str, ssm_prefix: str, ssm_max_age_s: int, log_level: str
) -> dict[str, str]:
    """The resize function's environment (the stack's and the local runtime's)."""
    env = common_environment(
        service=RESIZE_SERVICE,
        bucket=bucket,
        ssm_prefix=ssm_prefix,
        ssm_max_age_s=ssm_max_age_s,
        log_level=log_level,
    )
    env[ENV_QUEUE_URL] = queue_url
    return env


def caption_environment(
    *,
    bucket: str,
    ssm_prefix: str,
    ssm_max_age_s: int,
    log_level: str,
    max_concurrency: int,
    knobs: CaptionKnobs,
    allowed_model_ids: tuple[str, ...] = (),
    write_object_tags: bool = False,
) -> dict[str, str]:
    """The caption function's environment (the stack's and the local runtime's)."""
    env = common_environment(
        service=CAPTION_SERVICE,
        bucket=bucket,
        ssm_prefix=ssm_prefix,
        ssm_max_age_s=ssm_max_age_s,
        log_level=log_level,
    )
    env.update(
        {
            ENV_MAX_CONCURRENCY: str(max_concurrency),
            ENV_BACKOFF_BASE: _seconds(knobs.throttle_backoff_base_s),
            ENV_BACKOFF_MAX: _seconds(knobs.throttle_backoff_max_s),
            ENV_MODEL_ERROR_ATTEMPTS: str(knobs.model_error_max_attempts),
            ENV_BEDROCK_READ_TIMEOUT: _seconds(knobs.bedrock_read_timeout_s),
            ENV_BEDROCK_MAX_ATTEMPTS: str(knobs.bedrock_max_attempts),
            ENV_CLAIM_LEASE: _seconds(knobs.claim_lease_s),
            ENV_ALLOWED_MODEL_IDS: ",".join(allowed_model_ids),
            ENV_WRITE_OBJECT_TAGS: "true" if write_object_tags else "false",
        }
    )
    return env


# The time the caption function keeps free at the end of an invocation, and the connect timeout of
# its clients: the synth check of the call budget and the function use the same figures.
CAPTION_SAFETY_MARGIN_S = 5.0
CONNECT_TIMEOUT_S = 5.0
CLAIM_LEASE_MARGIN_S = 60  # a claim outlives the function timeout by at least this


# --------------------------------------------------------------------------- metrics


class Metric:
    """Metric names (EMF, namespace ``METRICS_NAMESPACE``, dimension ``service``)."""

    IMAGES_RECEIVED = "ImagesReceived"
    IMAGES_RESIZED = "ImagesResized"
    IMAGES_REJECTED = "ImagesRejected"  # + ErrorCode dimension (both stages)
    RESIZE_DUPLICATES = "ResizeDuplicatesSkipped"
    RESIZE_MS = "ResizeDuration"
    FOLDER_MARKERS = "FolderMarkersIgnored"
    SUPERSEDED = "SupersededSkipped"  # a newer upload replaced the image: nothing written
    CAPTIONS_WRITTEN = "CaptionsWritten"
    CAPTIONS_TRUNCATED = "CaptionsTruncated"  # stopReason max_tokens: stored with "truncated": true
    MODEL_CALLS = "ModelCalls"
    MODEL_THROTTLES = "ModelThrottles"
    MODEL_TRANSIENT_ERRORS = "ModelTransientErrors"
    # Access denied, unknown / not-enabled model, a parameter the model refuses: retried, alarmed.
    MODEL_CONFIGURATION_ERRORS = "ModelConfigurationErrors"
    MODEL_LATENCY = "ModelLatency"
    INPUT_TOKENS = "InputTokens"
    OUTPUT_TOKENS = "OutputTokens"
    DUPLICATES_AVOIDED = "DuplicatesAvoided"
    HELD_BY_BATCH = "MessagesHeldByBatch"  # a submitted backfill job owns the image: message finished
    END_TO_END_AGE = "EndToEndAge"
    DEFERRED = "MessagesDeferred"  # batch item failures: retried later with a backed-off visibility
    PACING_WAIT_MS = "PacingWait"
    # With a backlog, C workers at the observed call time cannot reach the target rate (issue 13).
    CAPACITY_SHORTFALL = "CapacityShortfall"
    REACHABLE_RPM = "ReachableRequestsPerMinute"  # C x 60 / observed call time, with a backlog
    # issue 15: a structured answer that did not validate (retried, then model_output_invalid)
    MODEL_OUTPUT_INVALID = "ModelOutputInvalid"
    OBJECT_TAGS_WRITTEN = "ObjectTagsWritten"
    OBJECT_TAGS_FAILED = "ObjectTagsFailed"  # best effort after the caption: logged, never retried


ERROR_CODE_DIMENSION = "ErrorCode"

# --------------------------------------------------------------------------- stack outputs

OUTPUT_BUCKET = "BucketName"
OUTPUT_UPLOAD_PREFIX = "UploadPrefix"
OUTPUT_QUEUE_URL = "QueueUrl"
OUTPUT_DLQ_URL = "DeadLetterQueueUrl"
OUTPUT_SSM_PREFIX = "SsmPrefix"
OUTPUT_DASHBOARD = "DashboardName"
OUTPUT_ALARM_TOPIC = "AlarmTopicArn"
OUTPUT_RESIZE_FUNCTION = "ResizeFunctionName"
OUTPUT_CAPTION_FUNCTION = "CaptionFunctionName"
OUTPUT_RESIZE_FAILURE_QUEUE = "ResizeFailureQueueUrl"
OUTPUT_IDS = (
    OUTPUT_BUCKET,
    OUTPUT_UPLOAD_PREFIX,
    OUTPUT_QUEUE_URL,
    OUTPUT_DLQ_URL,
    OUTPUT_SSM_PREFIX,
    OUTPUT_DASHBOARD,
    OUTPUT_ALARM_TOPIC,
    OUTPUT_RESIZE_FUNCTION,
    OUTPUT_CAPTION_FUNCTION,
    OUTPUT_RESIZE_FAILURE_QUEUE,
)


# --------------------------------------------------------------------------- search (index stage)
# Captions -> embeddings (Amazon Bedrock) -> one vector per image in an Amazon S3 Vectors index.
# Deploy-time settings (CDK context, environment variables), not SSM tunables: a different model
# or dimension makes a different vector space, so changing one means a new index and a reindex.

INDEX_SERVICE = "index"
INDEX_HANDLER = "lambdas.index.handler.lambda_handler"

# Amazon Nova Multimodal Embeddings (README "Search", with sources): 256, 384, 1024 or 3072
# dimensions, an embedding purpose per request (GENERIC_INDEX for what is stored,
# GENERIC_RETRIEVAL for queries). Titan Multimodal Embeddings G1 is the alternative (256/384/1024).
NOVA_EMBEDDINGS_MODEL_ID = "amazon.nova-2-multimodal-embeddings-v1:0"
TITAN_EMBEDDINGS_MODEL_ID = "amazon.titan-embed-image-v1"
EMBEDDING_DIMENSIONS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {NOVA_EMBEDDINGS_MODEL_ID: (256, 384, 1024, 3072), TITAN_EMBEDDINGS_MODEL_ID: (256, 384, 1024)}
)
DEFAULT_EMBEDDING_MODEL_ID = NOVA_EMBEDDINGS_MODEL_ID
DEFAULT_EMBEDDING_DIMENSION = 1024
EMBEDDING_INPUTS = ("caption", "image", "both")  # what one vector embeds
DEFAULT_EMBEDDING_INPUT = "caption"
DISTANCE_METRICS = ("cosine", "euclidean")
DEFAULT_DISTANCE_METRIC = "cosine"
DEFAULT_INDEX_NAME = "image-captions"

# S3 Vectors limits (README "Search" > Limits, with sources).
MAX_PUT_VECTORS = 500  # vectors per PutVectors call (botocore: PutVectorsInputList max 500)
MAX_DELETE_VECTORS = 500
MAX_TOP_K = 100
MAX_FILTERABLE_METADATA_BYTES = 2048
MAX_NON_FILTERABLE_KEYS = 10

# Vector metadata: filterable keys are small and used by `imgcap search --folder/--tag`; the
# non-filterable ones (declared when the index is created) carry what a hit shows.
META_FOLDER = "folder"  # first path segment below images/ ("/" for images at the top level)
META_TAGS = "tags"  # the caption record's structured tags, when it has them
META_SOURCE_KEY = "source_key"
META_SOURCE_ETAG = "source_etag"  # the image version the vector describes
META_CAPTION = "caption"  # the caption's start
NON_FILTERABLE_METADATA_KEYS = (META_SOURCE_KEY, META_SOURCE_ETAG, META_CAPTION)
CAPTION_METADATA_CHARS = 500
ROOT_FOLDER = "/"

# Provisioned facts under /<stack-name>/ (present only when the stack has search). The notebook
# series also reads collection-name and collection-endpoint (OpenSearch Serverless): S3 Vectors
# has neither; vector-bucket + index-name address an index, through the regional s3vectors endpoint.
SSM_INDEX_NAME_PARAM = "index-name"
SSM_VECTOR_BUCKET_PARAM = "vector-bucket"
SSM_EMBEDDING_MODEL_PARAM = "embedding-model"
SSM_EMBEDDING_DIMENSION_PARAM = "embedding-dimension"
SSM_EMBEDDING_INPUT_PARAM = "embedding-input"
SSM_DISTANCE_METRIC_PARAM = "distance-metric"
SSM_INDEX_QUEUE_URL_PARAM = "index-queue-url"
SSM_INDEX_DLQ_URL_PARAM = "index-dlq-url"

ENV_VECTOR_BUCKET = "VECTOR_BUCKET_NAME"
ENV_INDEX_NAME = "VECTOR_INDEX_NAME"
ENV_EMBEDDING_MODEL = "EMBEDDING_MODEL_ID"
ENV_EMBEDDING_DIMENSION = "EMBEDDING_DIMENSION"
ENV_EMBEDDING_INPUT = "EMBEDDING_INPUT"
ENV_EMBEDDING_RPM = "EMBEDDING_REQUESTS_PER_MINUTE"


@dataclass(frozen=True, slots=True)
class IndexKnobs:
    """Deploy-time knobs of the index function (environment variables)."""

    # The account's embeddings quota, shared by the index function's C workers (each spends
    # rpm / C). Check the model's quota in Service Quotas; the default is deliberately modest.
    embedding_rpm: float = 100
    throttle_backoff_base_s: float = 10
    throttle_backoff_max_s: float = 300
    bedrock_read_timeout_s: float = 20
    bedrock_max_attempts: int = 3


def index_environment(
    *,
    bucket: str,
    ssm_prefix: str,
    ssm_max_age_s: int,
    log_level: str,
    max_concurrency: int,
    vector_bucket: str,
    index_name: str,
    embedding_model_id: str,
    embedding_dimension: int,
    embedding_input: str,
    knobs: IndexKnobs,
) -> dict[str, str]:
    """The index function's environment (the stack's and the local runtime's)."""
    env = common_environment(
        service=INDEX_SERVICE,
        bucket=bucket,
        ssm_prefix=ssm_prefix,
        ssm_max_age_s=ssm_max_age_s,
        log_level=log_level,
    )
    env.update(
        {
            ENV_MAX_CONCURRENCY: str(max_concurrency),
            ENV_VECTOR_BUCKET: vector_bucket,
            ENV_INDEX_NAME: index_name,
            ENV_EMBEDDING_MODEL: embedding_model_id,
            ENV_EMBEDDING_DIMENSION: str(embedding_dimension),
            ENV_EMBEDDING_INPUT: embedding_input,
            ENV_EMBEDDING_RPM: _seconds(knobs.embedding_rpm),
            ENV_BACKOFF_BASE: _seconds(knobs.throttle_backoff_base_s),
            ENV_BACKOFF_MAX: _seconds(knobs.throttle_backoff_max_s),
            ENV_BEDROCK_READ_TIMEOUT: _seconds(knobs.bedrock_read_timeout_s),
            ENV_BEDROCK_MAX_ATTEMPTS: str(knobs.bedrock_max_attempts),
        }
    )
    return env


def check_embedding_model(model_id: str, dimension: int) -> None:
    """The model must be one the index stage speaks, at a dimension it offers."""
    dims = EMBEDDING_DIMENSIONS.get(model_id)
    if dims is None:
        known = ", ".join(EMBEDDING_DIMENSIONS)
        raise ContractError(f"embedding model must be one of {known}, got {model_id!r}")
    if dimension not in dims:
        raise ContractError(f"{model_id} produces {', '.join(map(str, dims))} dimensions, not {dimension}")


class IndexMetric:
    """Metric names of the index stage (same namespace, dimension ``service=index``)."""

    VECTORS_PUT = "VectorsPut"
    VECTORS_DELETED = "VectorsDeleted"
    INDEX_SKIPPED = "IndexSkipped"  # stale events: the caption or image changed since
    EMBEDDING_CALLS = "EmbeddingCalls"
    EMBEDDING_THROTTLES = "EmbeddingThrottles"
    EMBEDDING_ERRORS = "EmbeddingErrors"
    INDEX_DEFERRED = "IndexMessagesDeferred"


OUTPUT_VECTOR_BUCKET = "VectorBucketName"
OUTPUT_INDEX_NAME = "VectorIndexName"
OUTPUT_INDEX_ARN = "VectorIndexArn"
OUTPUT_EMBEDDING_MODEL = "EmbeddingModelId"
OUTPUT_INDEX_QUEUE_URL = "IndexQueueUrl"
OUTPUT_INDEX_DLQ_URL = "IndexDeadLetterQueueUrl"
OUTPUT_INDEX_FUNCTION = "IndexFunctionName"
SEARCH_OUTPUT_IDS = (
    OUTPUT_VECTOR_BUCKET,
    OUTPUT_INDEX_NAME,
    OUTPUT_INDEX_ARN,
    OUTPUT_EMBEDDING_MODEL,
    OUTPUT_INDEX_QUEUE_URL,
    OUTPUT_INDEX_DLQ_URL,
    OUTPUT_INDEX_FUNCTION,
)

# --------------------------------------------------------------------------- prices and tokens

# Amazon Nova Pro on-demand list price, USD per 1,000 tokens (the MODEL_PRICES row below): the
# dashboard's cost widget uses these unless overridden with -c inputTokenPricePer1k=...
NOVA_PRO_INPUT_PRICE_PER_1K = 0.0008
NOVA_PRO_OUTPUT_PRICE_PER_1K = 0.0032

# Input tokens of one call before the real usage is known: a 1280x720 image costs Nova roughly
# 1,600 tokens (Nova user guide's image-to-token table: ~1,800 at 1400x900); rounded up, plus the
# prompt at ~3 characters per token (generous for English). maxTokens is reserved on top.
IMAGE_INPUT_TOKENS_ESTIMATE = 1_700
CHARS_PER_TOKEN_ESTIMATE = 3


def estimate_input_tokens(prompt: str) -> int:
    return IMAGE_INPUT_TOKENS_ESTIMATE + math.ceil(len(prompt) / CHARS_PER_TOKEN_ESTIMATE)


def estimate_cost_usd(
    input_tokens: float,
    output_tokens: float,
    input_price_per_1k: float = NOVA_PRO_INPUT_PRICE_PER_1K,
    output_price_per_1k: float = NOVA_PRO_OUTPUT_PRICE_PER_1K,
) -> float:
    return input_tokens / 1000 * input_price_per_1k + output_tokens / 1000 * output_price_per_1k


# --------------------------------------------------------------------------- capacity (issue 13)

# One caption worker makes one model call at a time, so C workers can do at most C x 60 / L calls a
# minute at L seconds per call. The expected L per model family (the whole Converse call for one
# 1280x720 image and a detailed description at maxTokens 300: time to first token, with the image's
# prefill, plus ~230 output tokens at the model's output speed; README "Sizing the caption stage").
# Measure yours (`imgcap status` prints the observed call time) and deploy with
# `-c modelLatencySeconds=...` when it differs.
MODEL_LATENCY_S: Mapping[str, float] = MappingProxyType(
    {
        "amazon.nova-premier": 6.0,
        "amazon.nova-pro": 4.0,
        "amazon.nova-2-lite": 2.5,
        "amazon.nova-lite": 2.0,
        "amazon.nova-micro": 1.5,
    }
)
DEFAULT_MODEL_LATENCY_S = 4.0  # a model this table does not know: Nova Pro's figure
CONCURRENCY_HEADROOM = 1.25  # workers beyond the bare minimum: per-record overhead, slow calls
MIN_CONCURRENCY = 2  # the SQS event source mapping's MaximumConcurrency bounds
MAX_CONCURRENCY = 1000
SHORTFALL_THRESHOLD = 0.9  # below this share of R (with a backlog), the fleet is too small
AUTO = "auto"


def expected_model_latency_s(model_id: str) -> float:
    """The documented call time of ``model_id`` (inference profiles and versions included)."""
    base = model_id.split(":", 1)[0]
    for family in sorted(MODEL_LATENCY_S, key=len, reverse=True):
        if family in base:
            return MODEL_LATENCY_S[family]
    return DEFAULT_MODEL_LATENCY_S


def auto_concurrency(
    requests_per_minute: float, latency_s: float, *, headroom: float = CONCURRENCY_HEADROOM
) -> int:
    """Workers needed to reach R requests a minute at L seconds a call, with headroom, in bounds."""
    if requests_per_minute <= 0 or latency_s <= 0:
        raise ContractError("requests per minute and latency must be positive")
    needed = math.ceil(requests_per_minute / 60.0 * latency_s * headroom - 1e-9)
    return max(MIN_CONCURRENCY, min(MAX_CONCURRENCY, needed))


def oversized_fleet_note(requests_per_minute: float, concurrency: int) -> str | None:
    """A sentence when C workers share R requests a minute so thinly that each may call less than
    once a minute (C > R), else None.

    Workers that start together then take their slots together: a whole cycle's calls land in one
    minute and the next minute stays empty, so about half of them are throttled and the fleet runs
    at about half the quota (measured on the local runtime: 2.4 captions a minute at R = 5, C = 10).
    Nothing is lost or paid twice; it is only slow. ``auto`` never sizes a fleet like that unless R
    is below the mapping's minimum of two workers.
    """
    if requests_per_minute <= 0 or concurrency <= requests_per_minute:
        return None
    interval_s = 60.0 * concurrency / requests_per_minute
    most = math.floor(requests_per_minute)
    fix = (
        f"use maxConcurrency auto or at most {most}"
        if most >= MIN_CONCURRENCY
        else f"the event source mapping needs at least {MIN_CONCURRENCY} workers, so only a quota of "
        f"{MIN_CONCURRENCY} or more requests a minute avoids it"
    )
    return (
        f"maxConcurrency {concurrency} is more than requests-per-minute {requests_per_minute:g}: each "
        f"worker may call once every {interval_s:.0f} s, longer than the quota's minute, so workers "
        f"that start together call in the same minute and the fleet runs at about half the quota; {fix}"
    )


def reachable_rpm(concurrency: int, latency_s: float) -> float:
    """The most requests a minute C one-call-at-a-time workers can make at L seconds a call."""
    return concurrency * 60.0 / max(latency_s, 1e-9)


def parse_concurrency(text: str, label: str = "maxConcurrency") -> int | None:
    """``auto`` (None: size it from the quota) or a whole number within the mapping's bounds."""
    value = str(text).strip().lower()
    if value == AUTO:
        return None
    try:
        number = int(value)
    except ValueError as exc:
        raise ContractError(f"{label} must be 'auto' or a whole number, got {text!r}") from exc
    if not MIN_CONCURRENCY <= number <= MAX_CONCURRENCY:
        raise ContractError(
            f"{label} must be 'auto' or between {MIN_CONCURRENCY} and {MAX_CONCURRENCY}, got {text!r}"
        )
    return number


# Lambda list prices, USD (arm64, us-east-1, read 2026-12; README "Costs"): GB-seconds of duration
# and requests. The cost per 1,000 captions adds them to the Bedrock tokens.
LAMBDA_PRICE_PER_GB_S = 0.0000133334
LAMBDA_PRICE_PER_REQUEST = 0.0000002


def lambda_cost_usd(gb_seconds: float, requests: float) -> float:
    return gb_seconds * LAMBDA_PRICE_PER_GB_S + requests * LAMBDA_PRICE_PER_REQUEST


def cost_per_1000_captions(
    *,
    captions: int,
    input_tokens: float,
    output_tokens: float,
    gb_seconds: float,
    lambda_requests: float,
    input_price_per_1k: float = NOVA_PRO_INPUT_PRICE_PER_1K,
    output_price_per_1k: float = NOVA_PRO_OUTPUT_PRICE_PER_1K,
    bedrock_usd: float | None = None,
) -> dict[str, float | None]:
    """USD per 1,000 captions: Bedrock tokens at the given prices (or ``bedrock_usd`` when each
    record was already priced at its own model and tier), Lambda GB-seconds and requests.

    Every call and invocation counts (throttled retries, rejected uploads), divided by the captions
    written: what 1,000 captions really cost. ``None`` when nothing was captioned.
    """
    bedrock = (
        bedrock_usd
        if bedrock_usd is not None
        else estimate_cost_usd(input_tokens, output_tokens, input_price_per_1k, output_price_per_1k)
    )
    compute = lambda_cost_usd(gb_seconds, lambda_requests)
    if captions <= 0:
        return {"bedrock_usd": None, "lambda_usd": None, "total_usd": None}
    scale = 1000 / captions
    return {
        "bedrock_usd": round(bedrock * scale, 4),
        "lambda_usd": round(compute * scale, 4),
        "total_usd": round((bedrock + compute) * scale, 4),
    }


# --------------------------------------------------------------------------- prices per model (issue 15)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """List prices of one model, USD per million tokens: on-demand and batch inference."""

    name: str
    input_per_1m: float
    output_per_1m: float
    batch_input_per_1m: float
    batch_output_per_1m: float


# Amazon Bedrock pricing page, Amazon Nova rows, us-east-1 (README "Costs" cites it with the date,
# 2026-12-01). Keyed by the foundation-model id; a "<geo>." inference profile costs the same
# (the price is the source Region's). Batch inference is half the on-demand price for these models.
MODEL_PRICES: Mapping[str, ModelPrice] = MappingProxyType(
    {
        "amazon.nova-pro-v1:0": ModelPrice("Amazon Nova Pro", 0.80, 3.20, 0.40, 1.60),
        "amazon.nova-lite-v1:0": ModelPrice("Amazon Nova Lite", 0.06, 0.24, 0.03, 0.12),
        "amazon.nova-2-lite-v1:0": ModelPrice("Amazon Nova 2 Lite", 0.30, 2.50, 0.15, 1.25),
        "amazon.nova-premier-v1:0": ModelPrice("Amazon Nova Premier", 2.50, 12.50, 1.25, 6.25),
    }
)
# What each service tier costs against the standard (default) on-demand price: Flex is sold at a
# discount, Priority at a premium (Bedrock service-tiers page); the factors are the ratios of the
# pricing page's tiered rows, Flex half and Priority 1.75x (README "Costs" says how far checked).
SERVICE_TIER_PRICE_FACTORS: Mapping[str, float] = MappingProxyType(
    {"default": 1.0, "flex": 0.5, "priority": 1.75}
)
# Geography prefixes of system-defined inference profiles ("us.amazon.nova-pro-v1:0").
PROFILE_GEO_PREFIXES = ("us", "eu", "apac", "us-gov", "global", "jp", "au", "ca")


def foundation_model_of(model_id: str) -> str:
    """``us.amazon.nova-pro-v1:0`` -> ``amazon.nova-pro-v1:0``; a foundation-model id unchanged."""
    head, sep, rest = model_id.partition(".")
    return rest if sep and head in PROFILE_GEO_PREFIXES else model_id


def price_of(model_id: str) -> ModelPrice | None:
    """The list price row for a model id or inference profile; None when the table has none."""
    return MODEL_PRICES.get(foundation_model_of(model_id.strip()))


def model_cost_usd(
    model_id: str,
    input_tokens: float,
    output_tokens: float,
    *,
    service_tier: str = "default",
    batch: bool = False,
) -> float | None:
    """Estimated cost of tokens on a model at a tier (None: the model is not in the price table)."""
    price = price_of(model_id)
    if price is None:
        return None
    if batch:
        per_in, per_out = price.batch_input_per_1m, price.batch_output_per_1m
    else:
        factor = SERVICE_TIER_PRICE_FACTORS.get(service_tier, 1.0)
        per_in, per_out = price.input_per_1m * factor, price.output_per_1m * factor
    return input_tokens / 1e6 * per_in + output_tokens / 1e6 * per_out


def record_cost_usd(record: Mapping[str, object]) -> float | None:
    """A caption record's estimated cost: its usage at its model's price and its service tier."""
    usage = record.get("usage")
    if not isinstance(usage, Mapping):
        return None
    tokens = [usage.get("input_tokens"), usage.get("output_tokens")]
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens):
        return None
    tier = record.get("service_tier")
    return model_cost_usd(
        str(record.get("model_id") or ""),
        float(tokens[0]),  # type: ignore[arg-type]
        float(tokens[1]),  # type: ignore[arg-type]
        service_tier=tier if isinstance(tier, str) else "default",
        batch=record.get("mode") == "batch",  # a backfill's caption (issue 16): the batch price
    )


# --------------------------------------------------------------------------- structured captions (issue 15)

CAPTION_TOOL_NAME = "record_image_caption"
ALT_TEXT_MAX_CHARS = 125  # what screen-reader guidance recommends for alt text
TAGS_MIN = 3
TAGS_MAX = 10
TAG_MAX_CHARS = 40

# The tool's input schema (Converse toolSpec.inputSchema.json) and what the caption stage validates
# the answer against (lambdas/caption/structured.py implements exactly the keywords used here).
CAPTION_OUTPUT_SCHEMA: Mapping[str, object] = MappingProxyType(
    {
        "type": "object",
        "properties": {
            "description": {
                "type": "string",
                "minLength": 1,
                "description": "A detailed description of the image.",
            },
            "alt_text": {
                "type": "string",
                "minLength": 1,
                "maxLength": ALT_TEXT_MAX_CHARS,
                "description": (
                    f"Alt text for a screen reader: one plain sentence of at most {ALT_TEXT_MAX_CHARS} "
                    "characters, no markdown, and not starting with 'image of' or 'picture of'."
                ),
            },
            "tags": {
                "type": "array",
                "minItems": TAGS_MIN,
                "maxItems": TAGS_MAX,
                "uniqueItems": True,
                "items": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": TAG_MAX_CHARS,
                    "pattern": r"^[^A-Z\n]+$",
                },
                "description": (
                    f"{TAGS_MIN} to {TAGS_MAX} short lowercase keywords for search, most relevant first."
                ),
            },
            "text_in_image": {
                "type": "string",
                "description": "The text visible in the image, verbatim; an empty string if there is none.",
            },
        },
        "required": ["description", "alt_text", "tags", "text_in_image"],
        "additionalProperties": False,
    }
)
STRUCTURED_FIELDS = ("alt_text", "tags", "text_in_image")  # what a caption record adds in this format

# Per-folder prompts: /<stack>/prompts/<folder>[/<deeper>...] (README "Prompts per folder").
PROMPTS_PARAM_PATH = "prompts"

# Opt-in S3 object tags from the structured tags (S3's own limits, S3 user guide "Object tagging").
S3_MAX_TAGS = 10
S3_TAG_KEY_MAX = 128
S3_TAG_VALUE_MAX = 256
OBJECT_TAG_MARK = "imgcap"  # the value of every tag the pipeline writes: how it knows its own


# --------------------------------------------------------------------------- allowed models (issue 15)

NOVA_LITE_MODEL = "amazon.nova-lite-v1:0"
NOVA_2_LITE_MODEL = "amazon.nova-2-lite-v1:0"


def default_allowed_model_ids(model_id: str) -> tuple[str, ...]:
    """The configured model plus Nova Lite and Nova 2 Lite on the same inference-profile family.

    ``us.amazon.nova-pro-v1:0`` -> itself, ``us.amazon.nova-lite-v1:0``, ``us.amazon.nova-2-lite-v1:0``.
    A foundation-model id (no geography prefix) gets Nova Lite only: Nova 2 Lite has no in-Region
    endpoint, it is served through inference profiles (Nova 2 user guide, "Core inference").
    """
    head, sep, _ = model_id.partition(".")
    geo = head if sep and head in PROFILE_GEO_PREFIXES else None
    extra = [NOVA_LITE_MODEL, NOVA_2_LITE_MODEL] if geo else [NOVA_LITE_MODEL]
    ids = [model_id, *(f"{geo}.{m}" if geo else m for m in extra)]
    return tuple(dict.fromkeys(ids))


def parse_model_id_list(raw: str) -> tuple[str, ...]:
    """``a, b ,c`` -> ("a", "b", "c"); empty items dropped, order kept, duplicates removed."""
    return tuple(dict.fromkeys(item.strip() for item in str(raw or "").split(",") if item.strip()))


# --------------------------------------------------------------------------- batch backfill (issue 16)
# `imgcap backfill` and lambdas/backfill: Bedrock batch inference (CreateModelInvocationJob with
# modelInvocationType="Converse"). README "Backfills" cites the Bedrock pages behind each figure.

BACKFILL_SERVICE = "backfill"
BACKFILL_SUBMIT_HANDLER = "lambdas.backfill.handler.submit_handler"
BACKFILL_COLLECT_HANDLER = "lambdas.backfill.handler.collect_handler"

BATCH_PREFIX = "batch/"  # never under images/: nothing here triggers resize
BATCH_REQUESTS_PREFIX = "batch/requests/"  # the CLI's selection; an ObjectCreated here starts a submit
BATCH_INPUT_PREFIX = "batch/input/"  # JSONL files, read by the Bedrock service role only
BATCH_OUTPUT_PREFIX = "batch/output/"  # <file>.jsonl.out + manifest.json.out, written by Bedrock
BATCH_JOBS_PREFIX = "batch/jobs/"  # one job document + its record index (recordId -> key, ETag)

SSM_BATCH_LIMITS_PARAM = "batch-limits"  # JSON of BatchLimits as deployed, for the CLI

ENV_BATCH_ROLE_ARN = "BATCH_SERVICE_ROLE_ARN"
ENV_BATCH_LIMITS = "BATCH_LIMITS_JSON"

BATCH_EVENT_SOURCE = "aws.bedrock"
BATCH_EVENT_DETAIL_TYPE = "Batch Inference Job State Change"


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """Per-job limits of a backfill: Bedrock batch quotas (Service Quotas names in the README).

    Defaults are the quotas observed for Nova Pro (issue 16) with margin: a job needs at least
    ``min_records``; at most ``max_records_per_job`` records, ``max_records_per_file`` per JSONL
    file, ``max_file_bytes`` per file and ``max_job_bytes`` per job. ``timeout_hours`` is the job's
    ``timeoutDurationInHours``; a batch claim is held that long plus ``claim_margin_s``. Set each with
    CDK context ``backfill<Field>`` (e.g. ``-c backfillMinRecords=100``), validated by
    ``parse_batch_limits``.
    """

    min_records: int = 100
    max_records_per_job: int = 50_000
    max_records_per_file: int = 50_000
    max_file_bytes: int = 1_000_000_000
    max_job_bytes: int = 5_000_000_000
    timeout_hours: int = 24
    claim_margin_s: int = 3_600


# field -> (CDK context key, lowest, highest)
BATCH_LIMIT_RANGES: Mapping[str, tuple[str, int, int]] = MappingProxyType(
    {
        "min_records": ("backfillMinRecords", 1, 1_000_000),
        "max_records_per_job": ("backfillMaxRecordsPerJob", 1, 10_000_000),
        "max_records_per_file": ("backfillMaxRecordsPerFile", 1, 10_000_000),
        "max_file_bytes": ("backfillMaxFileBytes", 1_000_000, 100_000_000_000),
        "max_job_bytes": ("backfillMaxJobBytes", 1_000_000, 1_000_000_000_000),
        "timeout_hours": ("backfillTimeoutHours", 24, 168),
        "claim_margin_s": ("backfillClaimMarginSeconds", 0, 86_400),
    }
)


def parse_batch_limits(values: Mapping[str, object], label: str = "context") -> BatchLimits:
    """BatchLimits from ``{field or context key: value}``; missing ones keep their default."""
    defaults = BatchLimits()
    parsed: dict[str, int] = {}
    for field_name, (context_key, lo, hi) in BATCH_LIMIT_RANGES.items():
        raw = values.get(field_name, values.get(context_key))
        if raw is None or str(raw).strip() == "":
            parsed[field_name] = getattr(defaults, field_name)
            continue
        try:
            number = int(str(raw).strip())
        except ValueError as exc:
            raise ContractError(f"{label} {context_key} must be a whole number, got {raw!r}") from exc
        if not lo <= number <= hi:
            raise ContractError(f"{label} {context_key} must be between {lo:,} and {hi:,}, got {raw!r}")
        parsed[field_name] = number
    limits = BatchLimits(**parsed)
    if limits.min_records > limits.max_records_per_job:
        raise ContractError(f"{label} backfillMinRecords must not exceed backfillMaxRecordsPerJob")
    return limits


def batch_limits_json(limits: BatchLimits) -> str:
    return json.dumps({name: getattr(limits, name) for name in BATCH_LIMIT_RANGES}, sort_keys=True)


def backfill_environment(
    *,
    bucket: str,
    queue_url: str,
    ssm_prefix: str,
    ssm_max_age_s: int,
    log_level: str,
    role_arn: str,
    limits: BatchLimits,
) -> dict[str, str]:
    """The backfill functions' environment (submit and collect share it)."""
    env = common_environment(
        service=BACKFILL_SERVICE,
        bucket=bucket,
        ssm_prefix=ssm_prefix,
        ssm_max_age_s=ssm_max_age_s,
        log_level=log_level,
    )
    env.update(
        {ENV_QUEUE_URL: queue_url, ENV_BATCH_ROLE_ARN: role_arn, ENV_BATCH_LIMITS: batch_limits_json(limits)}
    )
    return env


# The backfill's fallback batch price (a model the price table does not know): Nova Pro's batch row
# of MODEL_PRICES, per 1,000 tokens (half its on-demand price, as Bedrock prices batch inference).
NOVA_PRO_BATCH_INPUT_PRICE_PER_1K = MODEL_PRICES["amazon.nova-pro-v1:0"].batch_input_per_1m / 1000
NOVA_PRO_BATCH_OUTPUT_PRICE_PER_1K = MODEL_PRICES["amazon.nova-pro-v1:0"].batch_output_per_1m / 1000


class BatchMetric:
    """Backfill metric names (EMF, namespace ``METRICS_NAMESPACE``, dimension service=backfill)."""

    JOBS_SUBMITTED = "BatchJobsSubmitted"
    JOBS_COLLECTED = "BatchJobsCollected"
    JOBS_FAILED = "BatchJobsFailed"  # collected in Failed, Stopped or Expired: an alarm candidate
    IMAGES_SENT_ONLINE = "BatchImagesSentOnline"  # fewer than the job minimum
    RECORDS_CAPTIONED = "BatchRecordsCaptioned"
    RECORDS_DUPLICATE = "BatchRecordsDuplicate"
    RECORDS_SUPERSEDED = "BatchRecordsSuperseded"
    RECORDS_ERROR_RECORD = "BatchRecordsErrorRecord"
    RECORDS_REQUEUED = "BatchRecordsRequeued"
    INPUT_TOKENS = "BatchInputTokens"
    OUTPUT_TOKENS = "BatchOutputTokens"


BATCH_FAILED_STATUSES = ("Failed", "Stopped", "Expired")
