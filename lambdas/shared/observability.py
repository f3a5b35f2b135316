"""One Logger, Tracer and Metrics for the whole function, created once per execution environment.

Service name and namespace come from ``POWERTOOLS_SERVICE_NAME`` / ``POWERTOOLS_METRICS_NAMESPACE``
(set per function by the stack and by the local runtime). Metric names are constants here so the
dashboard, the alarms and the local runtime's summary all use the same spelling.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ImageCaptioning")

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=NAMESPACE)


class M:
    """Metric names (EMF). Dimension ``service`` is always present; rejections add ``ErrorCode``."""

    IMAGES_RECEIVED = "ImagesReceived"
    IMAGES_RESIZED = "ImagesResized"
    IMAGES_REJECTED = "ImagesRejected"  # + ErrorCode dimension (both stages)
    RESIZE_DUPLICATES = "ResizeDuplicatesSkipped"
    RESIZE_MS = "ResizeDuration"
    FOLDER_MARKERS = "FolderMarkersIgnored"
    SUPERSEDED = "SupersededSkipped"  # a newer upload replaced the object before we got to it
    CAPTIONS_WRITTEN = "CaptionsWritten"
    MODEL_CALLS = "ModelCalls"
    MODEL_THROTTLES = "ModelThrottles"
    MODEL_TRANSIENT_ERRORS = "ModelTransientErrors"
    # Access denied, unknown / not-enabled model, a parameter the model refuses: retried, alarmed.
    MODEL_CONFIGURATION_ERRORS = "ModelConfigurationErrors"
    CAPTIONS_TRUNCATED = "CaptionsTruncated"  # stopReason max_tokens: stored with "truncated": true
    MODEL_LATENCY = "ModelLatency"
    INPUT_TOKENS = "InputTokens"
    OUTPUT_TOKENS = "OutputTokens"
    DUPLICATES_AVOIDED = "DuplicatesAvoided"
    END_TO_END_AGE = "EndToEndAge"
    DEFERRED = "MessagesDeferred"  # batch item failures: retried later with a backed-off visibility
    PACING_WAIT_MS = "PacingWait"


ERROR_CODE_DIMENSION = "ErrorCode"


def count(name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    metrics.add_metric(name=name, unit=unit, value=value)


def count_rejection(error_code: str) -> None:
    """One rejected input, as its own EMF blob so the ErrorCode dimension stays on this metric only."""
    with single_metric(
        name=M.IMAGES_REJECTED,
        unit=MetricUnit.Count,
        value=1,
        namespace=NAMESPACE,
        default_dimensions=metrics.default_dimensions,
    ) as metric:
        metric.add_dimension(name="service", value=logger.service)
        metric.add_dimension(name=ERROR_CODE_DIMENSION, value=error_code)
