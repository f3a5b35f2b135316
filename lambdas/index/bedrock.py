"""Adapter: embeddings through Bedrock ``InvokeModel`` (the index function and ``imgcap search``).

One vector may take several calls (Nova embeds one modality per request); each call is paced by
the caller-supplied ``before_call`` hook (the index function's token bucket). Service errors come
out as ``embeddings.EmbeddingError`` with a retry class; nothing is retried here beyond the
client's own few attempts: the queue's backed-off visibility is the real retry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from lambdas.index.embeddings import (
    EmbeddingError,
    EmbeddingRetry,
    EmbeddingSpec,
    Purpose,
    classify_error_code,
    combine,
    parse_answer,
    request_bodies,
)

_NETWORK_ERRORS = (ReadTimeoutError, ConnectTimeoutError, EndpointConnectionError, ConnectionClosedError)


class BedrockEmbedder:
    """``embed(purpose, text=..., image_png=...)`` -> one unit-length vector of ``spec.dimension``."""

    def __init__(
        self,
        client: Any,
        spec: EmbeddingSpec,
        before_call: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.spec = spec
        self.before_call = before_call
        self.calls = 0

    def _invoke(self, body: dict[str, Any]) -> list[float]:
        if self.before_call is not None:
            self.before_call()
        self.calls += 1
        try:
            response = self.client.invoke_model(
                modelId=self.spec.model_id,
                body=json.dumps(body).encode("utf-8"),
                contentType="application/json",
                accept="application/json",
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code") or "ClientError")
            message = str(exc.response.get("Error", {}).get("Message") or exc)
            raise EmbeddingError(f"{code}: {message}", classify_error_code(code)) from exc
        except _NETWORK_ERRORS as exc:
            raise EmbeddingError(f"{type(exc).__name__}: {exc}", EmbeddingRetry.TRANSIENT) from exc
        raw = response["body"].read()
        try:
            return parse_answer(raw, self.spec.dimension)
        except ValueError as exc:
            raise EmbeddingError(f"unusable embeddings answer: {exc}", EmbeddingRetry.CONFIGURATION) from exc

    def embed(
        self, purpose: Purpose, *, text: str | None = None, image_png: bytes | None = None
    ) -> list[float]:
        bodies = request_bodies(self.spec, purpose, text=text, image_png=image_png)
        return combine([self._invoke(body) for body in bodies])
