"""Adapter: one Converse call through a plain ``bedrock-runtime`` boto3 client.

SDK retries are kept low and explicit (``BEDROCK_MAX_ATTEMPTS`` total attempts, default 2): the
real retry policy is the queue's backed-off visibility timeout, not waiting inside Lambda.
Failures come out as ``model.ModelCallError`` with the service error code and HTTP status, or
the botocore class name for timeouts and connection failures; anything else (a bug, missing
credentials) propagates unchanged.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from lambdas.caption.model import ModelCallError
from lambdas.shared import aws
from lambdas.shared.observability import tracer

_NETWORK_ERRORS = (ReadTimeoutError, ConnectTimeoutError, EndpointConnectionError, ConnectionClosedError)


class BedrockConverse:
    """Callable model caller: ``request`` (``model.converse_request``) -> Converse response."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        with tracer.provider.in_subsegment("## bedrock.converse") as subsegment:
            subsegment.put_annotation("model_id", str(request.get("modelId", ""))[:250])
            try:
                response: dict[str, Any] = self.client.converse(**request)
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
    """The caller for this execution environment (the boto3 client is cached per arguments)."""
    return BedrockConverse(
        aws.client("bedrock-runtime", max_attempts=max_attempts, read_timeout=read_timeout_s)
    )
