"""Adapter: one Converse call through a plain ``bedrock-runtime`` boto3 client.

SDK retries are kept low and explicit (``BEDROCK_MAX_ATTEMPTS`` total attempts, default 2): the
real retry policy is the queue's backed-off visibility timeout, not waiting inside Lambda.
Failures come out as ``model.ModelCallError`` with the service error code and HTTP status, or
the botocore class name for timeouts and connection failures; anything else (a bug, missing
credentials) propagates unchanged.
"""

from __future__ import annotations

import math
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from lambdas.caption.model import CallBudgetTooSmall, ModelCallError
from lambdas.shared import aws
from lambdas.shared.observability import tracer

_NETWORK_ERRORS = (ReadTimeoutError, ConnectTimeoutError, EndpointConnectionError, ConnectionClosedError)


# Read timeouts come in steps, so an execution environment keeps a handful of clients at most.
READ_TIMEOUT_STEP_S = 5.0
MIN_READ_TIMEOUT_S = 5.0


def bedrock_client(max_attempts: int, read_timeout_s: float) -> Any:
    """The ``bedrock-runtime`` client for these limits (cached per arguments by ``aws.client``)."""
    return aws.client("bedrock-runtime", max_attempts=max_attempts, read_timeout=read_timeout_s)


def call_limits(budget_s: float, read_timeout_s: float, max_attempts: int) -> tuple[int, float] | None:
    """(attempts, read timeout) whose worst case, attempts x (connect + read), fits in ``budget_s``.

    The configured read timeout when it fits; else a shorter one, rounded down to whole steps so an
    environment keeps few clients. Fewer attempts before a read timeout below the minimum: a second
    attempt is worth less than a first one that may take as long as the model needs. None when not
    even one attempt of the minimum (or of the configured timeout, if smaller) fits.
    """
    floor_s = min(MIN_READ_TIMEOUT_S, read_timeout_s)
    for attempts in range(max(max_attempts, 1), 0, -1):
        per_attempt = budget_s / attempts - aws.CONNECT_TIMEOUT_S
        if per_attempt >= read_timeout_s:
            return attempts, read_timeout_s
        step = READ_TIMEOUT_STEP_S if per_attempt >= READ_TIMEOUT_STEP_S else 1.0
        read = math.floor(per_attempt / step) * step
        if read >= floor_s:
            return attempts, read
    return None


class BedrockConverse:
    """Callable model caller: (``model.converse_request``, time budget) -> Converse response.

    No call outlives its invocation: the SDK's attempts and read timeout are cut to the budget the
    use case passes (the invocation's time left minus its safety margin).
    """

    def __init__(self, read_timeout_s: float, max_attempts: int) -> None:
        self.read_timeout_s = read_timeout_s
        self.max_attempts = max_attempts

    def __call__(self, request: dict[str, Any], budget_s: float) -> dict[str, Any]:
        limits = call_limits(budget_s, self.read_timeout_s, self.max_attempts)
        if limits is None:
            raise CallBudgetTooSmall(f"a {budget_s:.1f} s budget cannot hold one model call")
        client = bedrock_client(*limits)
        with tracer.provider.in_subsegment("## bedrock.converse") as subsegment:
            subsegment.put_annotation("model_id", str(request.get("modelId", ""))[:250])
            try:
                response: dict[str, Any] = client.converse(**request)
            except ClientError as exc:
                error = exc.response.get("Error", {})
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                raise ModelCallError(
                    str(error.get("Code") or "ClientError"),
                    str(error.get("Message") or exc),
                    int(status) if status else None,
                ) from exc
            except _NETWORK_ERRORS as exc:
                raise ModelCallError(type(exc).__name__, str(exc)) from exc
            return response


def converse_caller(read_timeout_s: float, max_attempts: int) -> BedrockConverse:
    return BedrockConverse(read_timeout_s, max_attempts)
