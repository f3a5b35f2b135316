"""One Logger, Tracer and Metrics for the whole function, created once per execution environment.

Service name and namespace come from ``POWERTOOLS_SERVICE_NAME`` / ``POWERTOOLS_METRICS_NAMESPACE``
(set per function by the stack and by the local runtime). Metric names live in ``contract.Metric``,
so the dashboard, the alarms and the local runtime's summary all use the same spelling.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from lambdas.shared.contract import ENV_NAMESPACE, ERROR_CODE_DIMENSION, METRICS_NAMESPACE, Metric

__all__ = ["ERROR_CODE_DIMENSION", "Metric"]

NAMESPACE = os.environ.get(ENV_NAMESPACE, METRICS_NAMESPACE)

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=NAMESPACE)


def count(name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    metrics.add_metric(name=name, unit=unit, value=value)


def count_rejection(error_code: str) -> None:
    """One rejected input, as its own EMF blob so the ErrorCode dimension stays on this metric only."""
    with single_metric(
        name=Metric.IMAGES_REJECTED,
        unit=MetricUnit.Count,
        value=1,
        namespace=NAMESPACE,
        default_dimensions=metrics.default_dimensions,
    ) as metric:
        metric.add_dimension(name="service", value=logger.service)
        metric.add_dimension(name=ERROR_CODE_DIMENSION, value=error_code)
