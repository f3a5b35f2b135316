"""Embeddings requests and answers for the two model families the index stage speaks. Pure.

Amazon Nova Multimodal Embeddings (``amazon.nova-2-multimodal-embeddings-v1:0``, the default):
one modality per ``SINGLE_EMBEDDING`` request, a purpose per request (``GENERIC_INDEX`` for what
is stored, ``GENERIC_RETRIEVAL`` for a search query), 256/384/1024/3072 dimensions; the answer is
``{"embeddings": [{"embeddingType": ..., "embedding": [...]}]}``.
Amazon Titan Multimodal Embeddings G1 (``amazon.titan-embed-image-v1``): ``inputText`` and/or
``inputImage`` in one request (with both, the model averages them), ``embeddingConfig.
outputEmbeddingLength`` 256/384/1024, no purpose; the answer is ``{"embedding": [...]}``.
Sources in the README ("Search").

A vector of several parts (``embedding-input=both`` on Nova: the caption and the image) is the
mean of the unit-length parts, scaled to unit length again, so cosine and Euclidean order agree.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from lambdas.shared.contract import NOVA_EMBEDDINGS_MODEL_ID, TITAN_EMBEDDINGS_MODEL_ID

NOVA_SCHEMA_VERSION = "nova-multimodal-embed-v1"
TITAN_MAX_TEXT_CHARS = 800  # Titan MM G1 reads at most 256 text tokens
NOVA_MAX_TEXT_CHARS = 20_000  # well inside Nova's 8K-token context; truncationMode END covers the rest


class Purpose(Enum):
    INDEX = "GENERIC_INDEX"
    QUERY = "GENERIC_RETRIEVAL"


class EmbeddingRetry(Enum):
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    CONFIGURATION = "configuration"


class EmbeddingError(Exception):
    """An embeddings call that did not give a vector; always retryable (never about the image)."""

    def __init__(self, message: str, retry: EmbeddingRetry) -> None:
        super().__init__(message)
        self.retry = retry


_THROTTLE_CODES = {"ThrottlingException", "ServiceQuotaExceededException", "TooManyRequestsException"}
_TRANSIENT_CODES = {
    "InternalServerException",
    "ServiceUnavailableException",
    "ModelTimeoutException",
    "ModelNotReadyException",
    "RequestTimeout",
}


def classify_error_code(code: str) -> EmbeddingRetry:
    if code in _THROTTLE_CODES:
        return EmbeddingRetry.THROTTLED
    if code in _TRANSIENT_CODES:
        return EmbeddingRetry.TRANSIENT
    return EmbeddingRetry.CONFIGURATION  # access denied, model not enabled, a refused parameter


@dataclass(frozen=True, slots=True)
class EmbeddingSpec:
    model_id: str
    dimension: int


def family(model_id: str) -> str:
    """``nova`` or ``titan`` (a geo-prefixed inference profile id counts as its model)."""
    if model_id.endswith(NOVA_EMBEDDINGS_MODEL_ID) or ("nova" in model_id and "embed" in model_id):
        return "nova"
    if model_id.endswith(TITAN_EMBEDDINGS_MODEL_ID) or "titan-embed-image" in model_id:
        return "titan"
    raise ValueError(f"no request format known for embeddings model {model_id!r}")


def _nova_body(spec: EmbeddingSpec, purpose: Purpose, part: dict[str, Any]) -> dict[str, Any]:
    return {
        "schemaVersion": NOVA_SCHEMA_VERSION,
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": {
            "embeddingPurpose": purpose.value,
            "embeddingDimension": spec.dimension,
            **part,
        },
    }


def request_bodies(
    spec: EmbeddingSpec, purpose: Purpose, *, text: str | None = None, image_png: bytes | None = None
) -> list[dict[str, Any]]:
    """The InvokeModel bodies whose answers make one vector (one for Titan; one per part for Nova)."""
    if not text and image_png is None:
        raise ValueError("nothing to embed: no text and no image")
    if family(spec.model_id) == "titan":
        body: dict[str, Any] = {"embeddingConfig": {"outputEmbeddingLength": spec.dimension}}
        if text:
            body["inputText"] = text[:TITAN_MAX_TEXT_CHARS]
        if image_png is not None:
            body["inputImage"] = base64.b64encode(image_png).decode("ascii")
        return [body]
    bodies = []
    if text:
        bodies.append(
            _nova_body(
                spec, purpose, {"text": {"truncationMode": "END", "value": text[:NOVA_MAX_TEXT_CHARS]}}
            )
        )
    if image_png is not None:
        image = {
            "format": "png",
            "detailLevel": "STANDARD_IMAGE",
            "source": {"bytes": base64.b64encode(image_png).decode("ascii")},
        }
        bodies.append(_nova_body(spec, purpose, {"image": image}))
    return bodies


def parse_answer(raw: bytes | str, dimension: int) -> list[float]:
    """The vector in an InvokeModel answer of either family; ValueError when there is none."""
    try:
        document = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"embeddings answer is not JSON: {exc}") from exc
    vector: Any = None
    if isinstance(document, dict):
        if isinstance(document.get("embeddings"), list) and document["embeddings"]:
            first = document["embeddings"][0]
            vector = first.get("embedding") if isinstance(first, dict) else None
        elif "embedding" in document:
            vector = document["embedding"]
    if not isinstance(vector, list) or not vector:
        raise ValueError("embeddings answer has no embedding")
    values = [float(v) for v in vector]
    if len(values) != dimension:
        raise ValueError(f"embedding has {len(values)} dimensions, the index has {dimension}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError("embedding has non-finite values")
    return values


def unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        raise ValueError("zero vector (S3 Vectors refuses it for the cosine metric)")
    return [v / norm for v in vector]


def combine(parts: Sequence[Sequence[float]]) -> list[float]:
    """Mean of the unit-length parts, at unit length."""
    if not parts:
        raise ValueError("no parts to combine")
    units = [unit(p) for p in parts]
    mean = [sum(col) / len(units) for col in zip(*units, strict=True)]
    return unit(mean)
