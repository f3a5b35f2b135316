"""The caption stage's domain: model request, model answer, error classification, caption record.

Pure: no boto3, no environment, no clock (times are passed in). The Bedrock adapter turns SDK
exceptions into ``ModelCallError`` (code + HTTP status), and ``classify_error`` decides from those
plain values whether a failure is worth a retry or is final.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from lambdas.caption import structured
from lambdas.caption.structured import StructuredCaption
from lambdas.shared.config import ModelSpec
from lambdas.shared.contract import CAPTION_OUTPUT_SCHEMA, estimate_input_tokens
from lambdas.shared.errors import ErrorCode, Rejection
from lambdas.shared.records import RECORD_SCHEMA_VERSION, ImageMessage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# The answer hit maxTokens: stored, but marked ``truncated`` (README "Truncated captions").
TRUNCATED_STOP_REASON = "max_tokens"
# Stop reasons that mean the model (or a guardrail) refused: a permanent rejection.
REFUSAL_STOP_REASONS = frozenset({"content_filtered", "guardrail_intervened"})


# --------------------------------------------------------------------------- encoded input


def decode_png(encoded: bytes) -> bytes:
    """The PNG bytes inside a ``base64_images/...`` object, or ``Rejection(ENCODED_INVALID)``.

    Only the 8-byte PNG signature is checked (no image library in this function); Bedrock
    validates the rest and answers ValidationException for a broken image.
    """
    text = encoded.strip()
    if not text:
        raise Rejection(ErrorCode.ENCODED_INVALID, "the encoded image object is empty", "EmptyEncodedImage")
    try:
        png = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Rejection(
            ErrorCode.ENCODED_INVALID, f"the encoded image object is not valid base64: {exc}", "InvalidBase64"
        ) from exc
    if not png.startswith(PNG_SIGNATURE):
        raise Rejection(
            ErrorCode.ENCODED_INVALID, "the encoded image object does not hold a PNG image", "NotPng"
        )
    return png


# --------------------------------------------------------------------------- request


def reserved_tokens(spec: ModelSpec) -> int:
    """What one call books against the tokens-per-minute budget: input estimate + maxTokens."""
    prompt = spec.prompt
    if spec.structured:  # the tool's schema travels with the request and counts as input
        prompt += json.dumps(dict(CAPTION_OUTPUT_SCHEMA), default=dict)
    return estimate_input_tokens(prompt) + spec.max_tokens  # contract.estimate_input_tokens


def inference_settings(spec: ModelSpec) -> dict[str, Any]:
    return {
        "maxTokens": spec.max_tokens,
        "temperature": spec.temperature,
        "topP": spec.top_p,
        "topK": spec.top_k,
    }


def converse_request(spec: ModelSpec, png: bytes) -> dict[str, Any]:
    """Keyword arguments for ``bedrock-runtime.converse``: one user turn, the image then the prompt.

    ``structured``: plus the one tool, with the tool choice forced to it. A tier other than
    ``default`` is sent as ``serviceTier`` (``default`` is what Bedrock uses without the field).
    """
    request: dict[str, Any] = {
        "modelId": spec.model_id,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"image": {"format": "png", "source": {"bytes": png}}},
                    {"text": spec.prompt},
                ],
            }
        ],
        "inferenceConfig": {
            "maxTokens": spec.max_tokens,
            "temperature": spec.temperature,
            "topP": spec.top_p,
        },
        # topK is not part of Converse's common inferenceConfig; Nova reads it from here.
        "additionalModelRequestFields": {"inferenceConfig": {"topK": spec.top_k}},
    }
    if spec.structured:
        request["toolConfig"] = structured.tool_config()
    if spec.service_tier != "default":
        request["serviceTier"] = {"type": spec.service_tier}
    return request


# --------------------------------------------------------------------------- response


@dataclass(frozen=True, slots=True)
class ModelAnswer:
    text: str
    stop_reason: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    service_latency_ms: int | None  # Bedrock's own measure (``metrics.latencyMs``), if present
    structured: StructuredCaption | None = None  # caption-format structured: the validated record
    service_tier: str | None = None  # the tier Bedrock says served the call (``serviceTier.type``)

    @property
    def truncated(self) -> bool:
        """The model stopped at ``maxTokens``: the caption ends mid-thought."""
        return self.stop_reason == TRUNCATED_STOP_REASON


def usage_of(response: Mapping[str, Any]) -> tuple[int, int, int]:
    """(input, output, total) tokens of a Converse response; zeros when absent."""
    usage = response.get("usage") or {}
    input_tokens = _non_negative_int(usage.get("inputTokens"))
    output_tokens = _non_negative_int(usage.get("outputTokens"))
    total = _non_negative_int(usage.get("totalTokens")) or input_tokens + output_tokens
    return input_tokens, output_tokens, total


def parse_response(response: Mapping[str, Any], *, structured_output: bool = False) -> ModelAnswer:
    """Read the first content block that has text; refusals and empty answers are rejections.

    ``structured_output``: read and validate the caption tool's input instead; an answer that does
    not validate raises ``structured.InvalidStructuredOutput`` (the caller retries it like a model error).
    """
    stop_reason = str(response.get("stopReason") or "")
    if stop_reason in REFUSAL_STOP_REASONS:
        raise Rejection(
            ErrorCode.MODEL_REJECTED,
            f"the model did not describe the image (stopReason {stop_reason})",
            "ContentFiltered" if stop_reason == "content_filtered" else "GuardrailIntervened",
        )
    message = (response.get("output") or {}).get("message") or {}
    if structured_output:
        record = structured.check(structured.tool_input_of(message.get("content") or []))
        return _answer(response, record.description, stop_reason, record)
    text = ""
    for block in message.get("content") or []:
        if isinstance(block, Mapping) and isinstance(block.get("text"), str):
            text = block["text"].strip()
            break
    if not text:
        raise Rejection(
            ErrorCode.MODEL_ERROR,
            f"the model returned no text (stopReason {stop_reason or 'missing'})",
            "EmptyModelAnswer",
        )
    return _answer(response, text, stop_reason, None)


def _answer(
    response: Mapping[str, Any], text: str, stop_reason: str, record: StructuredCaption | None
) -> ModelAnswer:
    input_tokens, output_tokens, total = usage_of(response)
    latency = (response.get("metrics") or {}).get("latencyMs")
    tier = (response.get("serviceTier") or {}).get("type")
    return ModelAnswer(
        text=text,
        stop_reason=stop_reason,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total,
        service_latency_ms=latency if isinstance(latency, int) and not isinstance(latency, bool) else None,
        structured=record,
        service_tier=str(tier) if isinstance(tier, str) and tier else None,
    )


def _non_negative_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


# --------------------------------------------------------------------------- errors


class ModelCallError(Exception):
    """A failed model call, reduced to plain values by the adapter.

    ``code`` is the service error code (``ThrottlingException``...) or, for a failure below the
    HTTP layer, the botocore exception class name (``ReadTimeoutError``...).
    """

    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


class CallBudgetTooSmall(Exception):
    """The time left cannot hold one bounded model call: nothing was sent, nothing was paid."""


class RetryKind(StrEnum):
    THROTTLED = "throttled"  # over the quota: back off harder
    TRANSIENT = "transient"  # the service or the network had a bad moment
    CONFIGURATION = "configuration"  # access, model id, a parameter the model refuses: an operator fixes it


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do about a failed call: retry later (``retry`` set) or record ``code`` and finish."""

    retry: RetryKind | None
    code: ErrorCode | None
    error_type: str
    message: str

    @property
    def retryable(self) -> bool:
        return self.retry is not None


THROTTLE_CODES = frozenset({"ThrottlingException", "TooManyRequestsException"})
TRANSIENT_CODES = frozenset(
    {
        "ServiceUnavailableException",
        "ModelNotReadyException",
        "InternalServerException",
        "ModelTimeoutException",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "EndpointConnectionError",
        "ConnectionClosedError",
    }
)
VALIDATION_CODE = "ValidationException"
# About the stack or the account, never about one image: retried (backed off, DLQ if they persist)
# so that fixing model access or the model id and redriving loses nothing.
CONFIGURATION_CODES = frozenset(
    {"AccessDeniedException", "ResourceNotFoundException", "UnrecognizedClientException"}
)
MODEL_ERROR_CODE = "ModelErrorException"
# A ValidationException is about the image only when Bedrock's message says so ("Input image is
# too large", "Unable to process the provided image", "exceeds max pixels", "unsupported format").
# Every other one is about the request we built from configuration: an unknown or not-enabled
# model id, on-demand use of a profile-only model, an inference parameter the model refuses.
_IMAGE_WORDS = re.compile(r"\b(image|images|png|pixels?|dimensions?)\b", re.IGNORECASE)
_CONFIGURATION_WORDS = re.compile(
    r"model identifier|model id|inference profile|on-demand|throughput|not enabled|access|"
    r"extraneous key|inferenceconfig|maxtokens|temperature|topp|topk|servicetier|toolconfig",
    re.IGNORECASE,
)


def validation_is_about_the_image(message: str) -> bool:
    """True for a ValidationException caused by the image itself (final), False for configuration."""
    return bool(_IMAGE_WORDS.search(message)) and not _CONFIGURATION_WORDS.search(message)


def classify_error(
    code: str,
    message: str,
    *,
    http_status: int | None,
    receive_count: int,
    model_error_max_attempts: int,
) -> Verdict:
    """Retryable (throttle / transient / configuration) or final (an ``ErrorCode`` for errors/).

    Only failures about the image itself are final (a ValidationException naming the image, a
    model error that persists). Access denied, an unknown model and a refused parameter are
    configuration: retried with backoff and dead-lettered if they persist, so a redrive after
    the fix captions every image.

    ModelErrorException is retried until the message has been received
    ``model_error_max_attempts`` times. Codes this table does not know are treated as transient:
    the message is retried and, if it never succeeds, ends in the DLQ where an operator sees it,
    rather than being written off as a permanent error on a guess.
    """
    if code in THROTTLE_CODES or (http_status == 429 and code != "ModelNotReadyException"):
        return Verdict(RetryKind.THROTTLED, None, code, message)
    if code == VALIDATION_CODE:
        if validation_is_about_the_image(message):
            return Verdict(None, ErrorCode.MODEL_REJECTED, code, message)
        return Verdict(RetryKind.CONFIGURATION, None, code, message)
    if code in CONFIGURATION_CODES or http_status in {401, 403}:
        return Verdict(RetryKind.CONFIGURATION, None, code, message)
    if code == MODEL_ERROR_CODE:
        if receive_count >= model_error_max_attempts:
            return Verdict(
                None,
                ErrorCode.MODEL_ERROR,
                code,
                f"{message} (failed on {receive_count} of {model_error_max_attempts} allowed attempts)",
            )
        return Verdict(RetryKind.TRANSIENT, None, code, message)
    return Verdict(RetryKind.TRANSIENT, None, code, message)


# --------------------------------------------------------------------------- records


def caption_record(
    message: ImageMessage,
    spec: ModelSpec,
    answer: ModelAnswer,
    *,
    latency_ms: float,
    receive_count: int,
    captioned_at: str,
) -> dict[str, Any]:
    """The body of ``captions/<path>.json`` (docs/schemas/caption-record.schema.json).

    ``caption`` is always the description, so readers of the text format keep working; the
    structured format adds ``alt_text``, ``tags`` and ``text_in_image``. ``latency_ms`` is the
    call as the function measured it (pacing excluded, network included); ``service_latency_ms``
    is Bedrock's own ``metrics.latencyMs`` for the same call, as the service reports it, None when
    the answer did not carry it. ``resize`` says how the image the model saw was made (nulls for a
    message from a resize stage older than these fields).
    """
    record: dict[str, Any] = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "caption": answer.text,
        **(answer.structured.fields() if answer.structured else {}),
        "caption_format": "structured" if answer.structured else "text",
        "model_id": spec.model_id,
        "service_tier": answer.service_tier or spec.service_tier,
        "prompt": spec.prompt,
        "prompt_source": spec.prompt_source,
        "inference": inference_settings(spec),
        "usage": {
            "input_tokens": answer.input_tokens,
            "output_tokens": answer.output_tokens,
            "total_tokens": answer.total_tokens,
        },
        "stop_reason": answer.stop_reason,
        "truncated": answer.truncated,
        "latency_ms": round(latency_ms, 1),
        "service_latency_ms": answer.service_latency_ms,
        "source": {
            "bucket": message.bucket,
            "key": message.source_key,
            "etag": message.source_etag,
            "width": message.width,
            "height": message.height,
        },
        "encoded_key": message.encoded_key,
        "resize": {
            "policy": message.resize_policy,
            "width": message.target_width,
            "height": message.target_height,
        },
        "uploaded_at": message.uploaded_at,
        "captioned_at": captioned_at,
        "receive_count": receive_count,
    }
    return record


def age_seconds(uploaded_at: str, now_epoch: float) -> float | None:
    """Seconds from the upload (ISO 8601, ``Z`` allowed) to ``now_epoch``; None if unparsable."""
    try:
        uploaded = datetime.fromisoformat(uploaded_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if uploaded.tzinfo is None:
        return None
    return max(0.0, now_epoch - uploaded.timestamp())
