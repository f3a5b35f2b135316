"""Stand-in embeddings for the Bedrock stand-in's ``InvokeModel`` (offline, deterministic, not a model).

Answers the two request formats the index stage sends (Amazon Nova Multimodal Embeddings and
Titan Multimodal Embeddings G1) in their own answer shapes, at the requested dimension. The vector
is a hashed bag of words (the "hashing trick"): each content word lands in one dimension with a
sign, both from its SHA-256, weighted 1 + log(count), and the result is scaled to unit length. An
image is embedded through the words the stand-in captioner would use for it (``standin.describe``:
brightness, orientation, colour names, detail, letterbox bars), so an image and its stand-in
caption get the same vector, and captions that share words are near each other. Words every
stand-in caption has (its "not a model" mark) and English filler words are left out.

Nothing here resembles a trained model's semantics: it is enough to make search work end to end
on the local runtime and in tests, with predictable rankings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from lambdas.shared.contract import EMBEDDING_DIMENSIONS, TITAN_EMBEDDINGS_MODEL_ID

STANDIN_EMBEDDINGS_MARK = "stand-in embeddings (hashed bag of words, not a model)"

_WORD = re.compile(r"[a-z0-9]+")
_FILLER = "a an and are as at be by for from has have in into is it its of on or some that the this to with"
_MARK_WORDS = "about image picture offline stand caption not model"
STOPWORDS = frozenset(f"{_FILLER} {_MARK_WORDS}".split(" "))


class EmbeddingRequestError(ValueError):
    """A body the stand-in (like the model) refuses: HTTP 400 ValidationException."""


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1]


def hashed_vector(tokens: Sequence[str], dimension: int) -> list[float]:
    """Unit-length hashed bag of ``tokens``; a fixed non-zero vector when there are none."""
    vector = [0.0] * dimension
    for token, n in Counter(tokens).items():
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        slot = int.from_bytes(digest[:4], "big") % dimension
        sign = 1.0 if digest[4] & 1 else -1.0
        vector[slot] += sign * (1.0 + math.log(n))
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        vector[0], norm = 1.0, 1.0  # S3 Vectors refuses a zero vector under cosine
    return [v / norm for v in vector]


def image_words(data: bytes) -> list[str]:
    from imgcap.local.standin import UnreadableImage, analyse_image, describe

    try:
        return words(describe(analyse_image(data)))
    except UnreadableImage as exc:
        raise EmbeddingRequestError(f"The provided image is not valid: {exc}") from exc


def _decode(b64: object) -> bytes:
    if not isinstance(b64, str):
        raise EmbeddingRequestError("image bytes must be a base64 string")
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EmbeddingRequestError(f"image bytes are not valid base64: {exc}") from exc


def _mean(parts: Sequence[Sequence[float]]) -> list[float]:
    mean = [sum(col) / len(parts) for col in zip(*parts, strict=True)]
    norm = math.sqrt(sum(v * v for v in mean)) or 1.0
    return [v / norm for v in mean]


def answer(model_id: str, body: bytes) -> dict[str, Any]:
    """The stand-in's answer to one embeddings ``InvokeModel`` body."""
    try:
        request = json.loads(body)
    except ValueError as exc:
        raise EmbeddingRequestError(f"Malformed input request: {exc}") from exc
    if not isinstance(request, dict):
        raise EmbeddingRequestError("Malformed input request: not a JSON object")
    if model_id.endswith(TITAN_EMBEDDINGS_MODEL_ID):
        return _titan(request)
    return _nova(request)


def _titan(request: dict[str, Any]) -> dict[str, Any]:
    dimension = int((request.get("embeddingConfig") or {}).get("outputEmbeddingLength", 1024))
    if dimension not in EMBEDDING_DIMENSIONS[TITAN_EMBEDDINGS_MODEL_ID]:
        raise EmbeddingRequestError(f"outputEmbeddingLength {dimension} is not supported")
    parts = []
    text = request.get("inputText")
    if isinstance(text, str) and text:
        parts.append(hashed_vector(words(text), dimension))
    if "inputImage" in request:
        parts.append(hashed_vector(image_words(_decode(request["inputImage"])), dimension))
    if not parts:
        raise EmbeddingRequestError("at least one of inputText and inputImage is required")
    return {
        "embedding": _mean(parts),
        "inputTextTokenCount": len(words(text)) if isinstance(text, str) else 0,
        "message": STANDIN_EMBEDDINGS_MARK,
    }


def _nova(request: dict[str, Any]) -> dict[str, Any]:
    if request.get("taskType") != "SINGLE_EMBEDDING":
        raise EmbeddingRequestError("taskType must be SINGLE_EMBEDDING for a synchronous call")
    params = request.get("singleEmbeddingParams")
    if not isinstance(params, dict) or not params.get("embeddingPurpose"):
        raise EmbeddingRequestError("singleEmbeddingParams.embeddingPurpose is required")
    dimension = int(params.get("embeddingDimension", 3072))
    if dimension not in (256, 384, 1024, 3072):
        raise EmbeddingRequestError(f"embeddingDimension {dimension} is not supported")
    text, image = params.get("text"), params.get("image")
    if (text is None) == (image is None):
        raise EmbeddingRequestError("exactly one of text and image is required in a single embedding")
    if text is not None:
        value = text.get("value") if isinstance(text, dict) else None
        if not isinstance(value, str) or not value:
            raise EmbeddingRequestError("text.value must be a non-empty string")
        kind, tokens = "TEXT", words(value)
    else:
        source = image.get("source") if isinstance(image, dict) else None
        kind, tokens = "IMAGE", image_words(_decode((source or {}).get("bytes")))
    return {"embeddings": [{"embeddingType": kind, "embedding": hashed_vector(tokens, dimension)}]}
