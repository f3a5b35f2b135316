"""Adapter: the S3 Vectors calls the project uses, over a boto3 ``s3vectors`` client.

``put`` and ``delete`` split into calls of at most 500 (the service's per-call limit); ``query``
asks for distances and metadata (which needs ``s3vectors:GetVectors`` besides ``QueryVectors``);
``keys`` pages through ``ListVectors`` (``imgcap status``'s index lag). The same adapter runs
against AWS and the local stand-in (``imgcap.local.vectors_standin``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lambdas.index.domain import chunks
from lambdas.shared.contract import MAX_DELETE_VECTORS, MAX_PUT_VECTORS, MAX_TOP_K


@dataclass(frozen=True, slots=True)
class VectorRecord:
    key: str
    data: list[float]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hit:
    key: str
    distance: float | None
    metadata: dict[str, Any]


class VectorIndex:
    def __init__(self, client: Any, vector_bucket: str, index_name: str) -> None:
        self.client = client
        self.vector_bucket = vector_bucket
        self.index_name = index_name

    def _where(self) -> dict[str, str]:
        return {"vectorBucketName": self.vector_bucket, "indexName": self.index_name}

    def put(self, records: Sequence[VectorRecord]) -> int:
        for batch in chunks(records, MAX_PUT_VECTORS):
            self.client.put_vectors(
                **self._where(),
                vectors=[{"key": r.key, "data": {"float32": r.data}, "metadata": r.metadata} for r in batch],
            )
        return len(records)

    def delete(self, keys: Sequence[str]) -> int:
        for batch in chunks(list(dict.fromkeys(keys)), MAX_DELETE_VECTORS):
            self.client.delete_vectors(**self._where(), keys=batch)
        return len(keys)

    def query(self, vector: Sequence[float], top_k: int, filter_: dict[str, Any] | None = None) -> list[Hit]:
        request: dict[str, Any] = {
            **self._where(),
            "queryVector": {"float32": list(vector)},
            "topK": max(1, min(top_k, MAX_TOP_K)),
            "returnDistance": True,
            "returnMetadata": True,
        }
        if filter_:
            request["filter"] = filter_
        response = self.client.query_vectors(**request)
        return [
            Hit(
                key=str(v["key"]),
                distance=None if v.get("distance") is None else float(v["distance"]),
                metadata=dict(v.get("metadata") or {}),
            )
            for v in response.get("vectors", [])
        ]

    def entries(self, page_size: int = 1000) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every (key, metadata) in the index."""
        token: str | None = None
        while True:
            request: dict[str, Any] = {**self._where(), "maxResults": page_size, "returnMetadata": True}
            if token:
                request["nextToken"] = token
            response = self.client.list_vectors(**request)
            for v in response.get("vectors", []):
                yield str(v["key"]), dict(v.get("metadata") or {})
            token = response.get("nextToken")
            if not token:
                return

    def is_empty(self) -> bool:
        response = self.client.list_vectors(**self._where(), maxResults=1)
        return not response.get("vectors")
