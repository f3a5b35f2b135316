"""Unit tests for the caption domain: request, response, error classification, records."""

from __future__ import annotations

import base64

import pytest

from lambdas.caption import model
from lambdas.caption.model import RetryKind
from lambdas.shared import contract
from lambdas.shared.config import DEFAULT_MODEL_ID, DEFAULT_PROMPT, ModelSpec
from lambdas.shared.errors import ErrorCode, Rejection
from lambdas.shared.records import ImageMessage

pytestmark = pytest.mark.unit

PNG = model.PNG_SIGNATURE + b"\x00\x00\x00\rIHDR-rest-of-a-png"


def _message() -> ImageMessage:
    return ImageMessage(
        bucket="bkt",
        source_key="images/trips/a b.jpg",
        source_etag="abc123",
        encoded_key="base64_images/trips/a b.jpg.txt",
        width=4000,
        height=3000,
        uploaded_at="2026-11-24T07:00:00.000Z",
    )


def _response(**overrides):
    response = {
        "output": {"message": {"role": "assistant", "content": [{"text": "  A red kite over a beach.  "}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 1650, "outputTokens": 42, "totalTokens": 1692},
        "metrics": {"latencyMs": 2345},
    }
    response.update(overrides)
    return response


# --- encoded input ----------------------------------------------------------------------------


def test_given_base64_png_with_trailing_newline_when_decoded_then_png_bytes():
    assert model.decode_png(base64.b64encode(PNG) + b"\n") == PNG


@pytest.mark.parametrize(
    ("encoded", "error_type"),
    [
        (b"", "EmptyEncodedImage"),
        (b"  \n", "EmptyEncodedImage"),
        (b"not base64 at all!", "InvalidBase64"),
        (b"QUJ", "InvalidBase64"),  # missing padding
        (base64.b64encode(b"GIF89a\x01\x00"), "NotPng"),
        (base64.b64encode(b"\xff\xd8\xff\xe0JFIF"), "NotPng"),
    ],
)
def test_given_unusable_encoded_object_when_decoded_then_encoded_invalid_rejection(encoded, error_type):
    with pytest.raises(Rejection) as caught:
        model.decode_png(encoded)
    assert caught.value.code is ErrorCode.ENCODED_INVALID
    assert caught.value.error_type == error_type


# --- request ----------------------------------------------------------------------------------


def test_given_default_spec_when_building_request_then_notebook_settings_in_converse_shape():
    # Given the defaults (the notebook's model, prompt and inference settings)
    request = model.converse_request(ModelSpec(), PNG)
    # Then the Converse arguments carry them, with topK in the model-specific fields
    assert request == {
        "modelId": DEFAULT_MODEL_ID,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"image": {"format": "png", "source": {"bytes": PNG}}},
                    {"text": DEFAULT_PROMPT},
                ],
            }
        ],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.3, "topP": 0.1},
        "additionalModelRequestFields": {"inferenceConfig": {"topK": 20}},
    }


def test_given_spec_when_reserving_tokens_then_image_estimate_plus_prompt_plus_max_tokens():
    spec = ModelSpec(prompt="x" * 30, max_tokens=500)
    assert model.reserved_tokens(spec) == contract.IMAGE_INPUT_TOKENS_ESTIMATE + 10 + 500
    # the default request books about 2,000 tokens against the tokens-per-minute share
    assert 1_900 <= model.reserved_tokens(ModelSpec()) <= 2_100


# --- response ---------------------------------------------------------------------------------


def test_given_answer_with_reasoning_block_first_when_parsed_then_first_text_block_stripped():
    response = _response(
        output={"message": {"content": [{"reasoningContent": {}}, {"text": " Two cats. "}, {"text": "x"}]}}
    )
    answer = model.parse_response(response)
    assert answer.text == "Two cats."
    assert (answer.input_tokens, answer.output_tokens, answer.total_tokens) == (1650, 42, 1692)
    assert answer.stop_reason == "end_turn"
    assert answer.service_latency_ms == 2345


def test_given_answer_without_metrics_or_total_when_parsed_then_total_summed_and_latency_none():
    response = _response(usage={"inputTokens": 10, "outputTokens": 5})
    del response["metrics"]
    answer = model.parse_response(response)
    assert answer.total_tokens == 15
    assert answer.service_latency_ms is None


@pytest.mark.parametrize("stop_reason", ["content_filtered", "guardrail_intervened"])
def test_given_refusal_stop_reason_when_parsed_then_model_rejected(stop_reason):
    with pytest.raises(Rejection) as caught:
        model.parse_response(_response(stopReason=stop_reason))
    assert caught.value.code is ErrorCode.MODEL_REJECTED
    assert stop_reason in caught.value.message


@pytest.mark.parametrize(
    "output",
    [
        {"message": {"content": [{"text": "   "}]}},
        {"message": {"content": []}},
        {"message": {"content": [{"image": {}}]}},
        {},
    ],
)
def test_given_answer_without_text_when_parsed_then_model_error(output):
    with pytest.raises(Rejection) as caught:
        model.parse_response(_response(output=output, stopReason="malformed_model_output"))
    assert caught.value.code is ErrorCode.MODEL_ERROR
    assert caught.value.error_type == "EmptyModelAnswer"


# --- error classification -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "retry", "error_code"),
    [
        ("ThrottlingException", 429, RetryKind.THROTTLED, None),
        ("SomeNewQuotaError", 429, RetryKind.THROTTLED, None),
        ("ModelNotReadyException", 429, RetryKind.TRANSIENT, None),
        ("ServiceUnavailableException", 503, RetryKind.TRANSIENT, None),
        ("InternalServerException", 500, RetryKind.TRANSIENT, None),
        ("ModelTimeoutException", 408, RetryKind.TRANSIENT, None),
        ("BadGateway", 502, RetryKind.TRANSIENT, None),
        ("ReadTimeoutError", None, RetryKind.TRANSIENT, None),
        ("ConnectTimeoutError", None, RetryKind.TRANSIENT, None),
        ("EndpointConnectionError", None, RetryKind.TRANSIENT, None),
        # Issue 11 item 4: about the account or the stack, never final for the image.
        ("AccessDeniedException", 403, RetryKind.CONFIGURATION, None),
        ("ResourceNotFoundException", 404, RetryKind.CONFIGURATION, None),
        ("SomeNewAuthError", 403, RetryKind.CONFIGURATION, None),
        ("ValidationException", 400, RetryKind.CONFIGURATION, None),  # "details" names no image
    ],
)
def test_given_failed_call_when_classified_then_retry_or_permanent_code(code, status, retry, error_code):
    verdict = model.classify_error(
        code, "details", http_status=status, receive_count=1, model_error_max_attempts=3
    )
    assert (verdict.retry, verdict.code) == (retry, error_code)
    assert verdict.retryable is (retry is not None)
    assert verdict.error_type == code


@pytest.mark.parametrize(
    ("message", "retry", "error_code"),
    [
        # Bedrock's messages about the image itself: final, an errors/ record.
        ("Input image is too large", None, ErrorCode.MODEL_REJECTED),
        ("Unable to process the provided image", None, ErrorCode.MODEL_REJECTED),
        ("The image exceeds the max pixels allowed", None, ErrorCode.MODEL_REJECTED),
        ("Image dimensions are not supported", None, ErrorCode.MODEL_REJECTED),
        # About the request built from configuration: retried, dead-lettered if it persists.
        ("The provided model identifier is invalid.", RetryKind.CONFIGURATION, None),
        (
            "Invocation of model ID amazon.nova-pro-v1:0 with on-demand throughput isn't supported. "
            "Retry your request with the ID or ARN of an inference profile that contains this model.",
            RetryKind.CONFIGURATION,
            None,
        ),
        ("Malformed input request: extraneous key [topK] is not permitted", RetryKind.CONFIGURATION, None),
        ("The maximum tokens you requested exceeds the model limit", RetryKind.CONFIGURATION, None),
        ("Model access is not enabled for this image model", RetryKind.CONFIGURATION, None),
        ("Something nobody has seen before", RetryKind.CONFIGURATION, None),
    ],
)
def test_given_a_validation_exception_then_only_one_about_the_image_is_final(message, retry, error_code):
    verdict = model.classify_error(
        "ValidationException", message, http_status=400, receive_count=1, model_error_max_attempts=3
    )
    assert (verdict.retry, verdict.code) == (retry, error_code)


@pytest.mark.parametrize(("receive_count", "retryable"), [(1, True), (2, True), (3, False), (7, False)])
def test_given_model_error_exception_when_classified_then_retried_until_the_allowed_attempts(
    receive_count, retryable
):
    verdict = model.classify_error(
        "ModelErrorException",
        "model failed",
        http_status=424,
        receive_count=receive_count,
        model_error_max_attempts=3,
    )
    assert verdict.retryable is retryable
    if not retryable:
        assert verdict.code is ErrorCode.MODEL_ERROR
        assert f"{receive_count} of 3" in verdict.message


# --- records ----------------------------------------------------------------------------------


def test_given_answer_when_building_caption_record_then_contract_fields_present():
    message = _message()
    spec = ModelSpec()
    answer = model.parse_response(_response())
    record = model.caption_record(
        message, spec, answer, latency_ms=2410.26, receive_count=2, captioned_at="2026-11-24T07:00:09.000Z"
    )
    assert set(record) >= {
        "schema_version",
        "caption",
        "model_id",
        "prompt",
        "inference",
        "usage",
        "stop_reason",
        "latency_ms",
        "source",
        "encoded_key",
        "uploaded_at",
        "captioned_at",
        "receive_count",
    }
    assert record["caption"] == "A red kite over a beach."
    assert record["inference"] == {"maxTokens": 300, "temperature": 0.3, "topP": 0.1, "topK": 20}
    assert record["usage"] == {"input_tokens": 1650, "output_tokens": 42, "total_tokens": 1692}
    assert record["source"] == {
        "bucket": "bkt",
        "key": "images/trips/a b.jpg",
        "etag": "abc123",
        "width": 4000,
        "height": 3000,
    }
    assert (record["latency_ms"], record["service_latency_ms"], record["receive_count"]) == (2410.3, 2345, 2)
    assert record["encoded_key"] == message.encoded_key


def test_given_upload_time_when_computing_age_then_seconds_since_upload():
    uploaded = "2026-11-24T07:00:00.000Z"
    epoch = 1795503600.0  # 2026-11-24T07:00:00Z
    assert model.age_seconds(uploaded, epoch + 12.5) == pytest.approx(12.5)
    assert model.age_seconds("yesterday", epoch) is None
    assert model.age_seconds("2026-11-24T07:00:00", epoch) is None  # no zone: not trusted
