"""A loopback stand-in for Amazon S3 Vectors: the calls the project makes, with exact search.

moto 5.2 implements vector buckets, indexes and put/get/list/delete vectors but not
``QueryVectors``, so the local runtime and the tests use this instead. It speaks the REST-JSON
shape boto3's ``s3vectors`` client sends (``POST /<Operation>`` with a JSON body; errors as an HTTP
status, ``{"message": ...}`` and the ``x-amzn-ErrorType`` header), for: CreateVectorBucket,
CreateIndex, GetIndex, ListIndexes, PutVectors, GetVectors, ListVectors, DeleteVectors, QueryVectors.

Search is exact (every vector is compared), by the index's metric: cosine distance (1 - cosine
similarity) or Euclidean distance, nearest first, ties by key. Metadata filters support the
operators the S3 Vectors guide lists ($eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists, $and,
$or; a bare value means $eq; $eq on a list matches any element). Limits checked like the service:
at most 500 vectors per put or delete, topK 1..100, the index's dimension, no zero vector under
cosine, non-filterable keys refused in filters. State lives in memory (``VectorStore``), usable
in-process by tests and served by ``VectorsStandin.serve()``.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from lambdas.shared.contract import MAX_DELETE_VECTORS, MAX_PUT_VECTORS, MAX_TOP_K

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
ACCOUNT = "123456789012"
MAX_BODY_BYTES = 20 * 1024 * 1024  # the service's request payload limit (20 MiB)


class VectorsError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def _bad(message: str) -> VectorsError:
    return VectorsError(400, "ValidationException", message)


def _missing(message: str) -> VectorsError:
    return VectorsError(404, "NotFoundException", message)


@dataclass
class _Index:
    name: str
    dimension: int
    metric: str
    non_filterable: frozenset[str]
    vectors: dict[str, tuple[list[float], dict[str, Any]]] = field(default_factory=dict)


# --- filters (pure) ---------------------------------------------------------------------------


def _eq(value: Any, expected: Any) -> bool:
    if isinstance(value, list):
        return expected in value
    return bool(value == expected)


def _compare(value: Any, op: str, operand: Any) -> bool:
    if op == "$eq":
        return _eq(value, operand)
    if op == "$ne":
        return not _eq(value, operand)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        return {
            "$gt": value > operand,
            "$gte": value >= operand,
            "$lt": value < operand,
            "$lte": value <= operand,
        }[op]
    if op in ("$in", "$nin"):
        if not isinstance(operand, list) or not operand:
            raise _bad(f"{op} needs a non-empty array")
        hit = any(_eq(value, o) for o in operand)
        return hit if op == "$in" else not hit
    raise _bad(f"unsupported filter operator {op}")


def matches(metadata: Mapping[str, Any], filter_: Any, non_filterable: frozenset[str] = frozenset()) -> bool:
    """Whether ``metadata`` passes ``filter_`` (the S3 Vectors filter language)."""
    if not isinstance(filter_, dict):
        raise _bad("filter must be a JSON object")
    for name, condition in filter_.items():
        if name in ("$and", "$or"):
            if not isinstance(condition, list) or not condition:
                raise _bad(f"{name} needs a non-empty array of filters")
            results = [matches(metadata, c, non_filterable) for c in condition]
            if not (all(results) if name == "$and" else any(results)):
                return False
            continue
        if name in non_filterable:
            raise _bad(f"metadata key {name!r} is non-filterable and cannot be used in a filter")
        present = name in metadata
        value = metadata.get(name)
        if isinstance(condition, dict) and condition and all(k.startswith("$") for k in condition):
            for op, operand in condition.items():
                if op == "$exists":
                    if bool(operand) != present:
                        return False
                elif not present or not _compare(value, op, operand):
                    return False
        elif not present or not _eq(value, condition):
            return False
    return True


def distance(metric: str, a: list[float], b: list[float]) -> float:
    if metric == "euclidean":
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return 1.0 - dot / (na * nb)


# --- the store --------------------------------------------------------------------------------


class VectorStore:
    """Vector buckets and their indexes, in memory, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, dict[str, _Index]] = {}
        self.calls: dict[str, int] = {}

    def _index(self, body: Mapping[str, Any]) -> _Index:
        bucket, name = body.get("vectorBucketName"), body.get("indexName")
        arn = body.get("indexArn")
        if arn and (not bucket or not name):
            # arn:aws:s3vectors:<region>:<account>:bucket/<bucket>/index/<name>
            parts = str(arn).split(":", 5)[-1].split("/")
            if len(parts) == 4 and parts[0] == "bucket" and parts[2] == "index":
                bucket, name = parts[1], parts[3]
        if bucket not in self._buckets:
            raise _missing(f"vector bucket {bucket!r} does not exist")
        index = self._buckets[str(bucket)].get(str(name))
        if index is None:
            raise _missing(f"index {name!r} does not exist in vector bucket {bucket!r}")
        return index

    def handle(self, operation: str, body: Mapping[str, Any]) -> dict[str, Any]:
        handler = getattr(self, f"_op_{operation}", None)
        if handler is None:
            message = f"operation {operation} is not in the stand-in"
            raise VectorsError(404, "UnknownOperationException", message)
        with self._lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            result: dict[str, Any] = handler(body)
            return result

    # -- buckets and indexes

    def _op_CreateVectorBucket(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name = str(body.get("vectorBucketName", ""))
        if not 3 <= len(name) <= 63:
            raise _bad("vectorBucketName must be 3 to 63 characters")
        if name in self._buckets:
            raise VectorsError(409, "ConflictException", f"vector bucket {name} already exists")
        self._buckets[name] = {}
        return {"vectorBucketArn": f"arn:aws:s3vectors:{REGION}:{ACCOUNT}:bucket/{name}"}

    def _op_CreateIndex(self, body: Mapping[str, Any]) -> dict[str, Any]:
        bucket = str(body.get("vectorBucketName", ""))
        if bucket not in self._buckets:
            raise _missing(f"vector bucket {bucket!r} does not exist")
        name = str(body.get("indexName", ""))
        dimension = body.get("dimension")
        metric = body.get("distanceMetric")
        if body.get("dataType") != "float32":
            raise _bad("dataType must be float32")
        if not isinstance(dimension, int) or not 1 <= dimension <= 4096:
            raise _bad("dimension must be 1 to 4096")
        if metric not in ("cosine", "euclidean"):
            raise _bad("distanceMetric must be cosine or euclidean")
        if name in self._buckets[bucket]:
            raise VectorsError(409, "ConflictException", f"index {name} already exists")
        keys = (body.get("metadataConfiguration") or {}).get("nonFilterableMetadataKeys") or []
        self._buckets[bucket][name] = _Index(name, dimension, str(metric), frozenset(map(str, keys)))
        return {"indexArn": f"arn:aws:s3vectors:{REGION}:{ACCOUNT}:bucket/{bucket}/index/{name}"}

    def _op_GetIndex(self, body: Mapping[str, Any]) -> dict[str, Any]:
        index = self._index(body)
        return {
            "index": {
                "vectorBucketName": body.get("vectorBucketName"),
                "indexName": index.name,
                "dataType": "float32",
                "dimension": index.dimension,
                "distanceMetric": index.metric,
                "metadataConfiguration": {"nonFilterableMetadataKeys": sorted(index.non_filterable)},
            }
        }

    def _op_ListIndexes(self, body: Mapping[str, Any]) -> dict[str, Any]:
        bucket = str(body.get("vectorBucketName", ""))
        if bucket not in self._buckets:
            raise _missing(f"vector bucket {bucket!r} does not exist")
        names = sorted(self._buckets[bucket])
        return {"indexes": [{"vectorBucketName": bucket, "indexName": n} for n in names]}

    # -- vectors

    def _check_vector(self, index: _Index, data: Any) -> list[float]:
        values = (data or {}).get("float32") if isinstance(data, dict) else None
        if not isinstance(values, list) or len(values) != index.dimension:
            raise _bad(f"vector data must have {index.dimension} float32 values")
        floats = [float(v) for v in values]
        if not all(math.isfinite(v) for v in floats):
            raise _bad("vector data must not contain NaN or Infinity")
        if index.metric == "cosine" and not any(floats):
            raise _bad("zero vectors are not allowed for the cosine distance metric")
        return floats

    def _op_PutVectors(self, body: Mapping[str, Any]) -> dict[str, Any]:
        index = self._index(body)
        vectors = body.get("vectors")
        if not isinstance(vectors, list) or not 1 <= len(vectors) <= MAX_PUT_VECTORS:
            raise _bad(f"vectors must hold 1 to {MAX_PUT_VECTORS} items")
        staged = {}
        for item in vectors:
            key = str(item.get("key", ""))
            if not 1 <= len(key) <= 1024:
                raise _bad("vector key must be 1 to 1024 characters")
            metadata = item.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise _bad("metadata must be an object")
            staged[key] = (self._check_vector(index, item.get("data")), dict(metadata))
        index.vectors.update(staged)  # all or nothing, like one request
        return {}

    def _op_DeleteVectors(self, body: Mapping[str, Any]) -> dict[str, Any]:
        index = self._index(body)
        keys = body.get("keys")
        if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_DELETE_VECTORS:
            raise _bad(f"keys must hold 1 to {MAX_DELETE_VECTORS} items")
        for key in keys:
            index.vectors.pop(str(key), None)
        return {}

    def _op_GetVectors(self, body: Mapping[str, Any]) -> dict[str, Any]:
        index = self._index(body)
        out = []
        for key in body.get("keys") or []:
            if key in index.vectors:
                data, metadata = index.vectors[key]
                entry: dict[str, Any] = {"key": key}
                if body.get("returnData"):
                    entry["data"] = {"float32": data}
                if body.get("returnMetadata"):
                    entry["metadata"] = metadata
                out.append(entry)
        return {"vectors": out}

    def _op_ListVectors(self, body: Mapping[str, Any]) -> dict[str, Any]:
        index = self._index(body)
        size = int(body.get("maxResults") or 500)
        start = int(body.get("nextToken") or 0)
        keys = sorted(index.vectors)
        page = keys[start : start + size]
        out = []
        for key in page:
            data, metadata = index.vectors[key]
            entry: dict[str, Any] = {"key": key}
            if body.get("returnData"):
                entry["data"] = {"float32": data}
            if body.get("returnMetadata"):
                entry["metadata"] = metadata
            out.append(entry)
        response: dict[str, Any] = {"vectors": out}
        if start + size < len(keys):
            response["nextToken"] = str(start + size)
        return response

    def _op_QueryVectors(self, body: Mapping[str, Any]) -> dict[str, Any]:
        index = self._index(body)
        top_k = body.get("topK")
        if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise _bad(f"topK must be 1 to {MAX_TOP_K}")
        query = self._check_vector(index, body.get("queryVector"))
        filter_ = body.get("filter")
        scored = []
        for key, (data, metadata) in index.vectors.items():
            if filter_ is not None and not matches(metadata, filter_, index.non_filterable):
                continue
            scored.append((distance(index.metric, query, data), key, metadata))
        scored.sort(key=lambda item: (item[0], item[1]))
        out = []
        for dist, key, metadata in scored[:top_k]:
            entry: dict[str, Any] = {"key": key}
            if body.get("returnDistance"):
                entry["distance"] = dist
            if body.get("returnMetadata"):
                entry["metadata"] = metadata
            out.append(entry)
        return {"vectors": out, "distanceMetric": index.metric}

    def count(self, vector_bucket: str, index_name: str) -> int:
        with self._lock:
            return len(self._index({"vectorBucketName": vector_bucket, "indexName": index_name}).vectors)


# --- serving ----------------------------------------------------------------------------------


class VectorsStandin:
    """``VectorStore`` on a loopback port; ``url`` is set inside ``serve()``."""

    def __init__(self, store: VectorStore | None = None) -> None:
        self.store = store or VectorStore()
        self.url = ""

    @contextmanager
    def serve(self) -> Iterator[VectorsStandin]:
        server = _Server((LOOPBACK, 0), _Handler)
        server.store = self.store
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="vectors-standin", daemon=True
        )
        thread.start()
        self.url = f"http://{LOOPBACK}:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    store: VectorStore


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _send(self, status: int, body: dict[str, Any], error_type: str | None = None) -> None:
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413, {"message": "Request payload too large"}, "ValidationException")
            return
        raw = self.rfile.read(length) if length else b"{}"
        operation = urlsplit(self.path).path.strip("/")
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise _bad("request body must be a JSON object")
            self._send(200, self.server.store.handle(operation, body))
        except VectorsError as exc:
            self._send(exc.status, {"message": exc.message}, exc.error_type)
        except (ValueError, TypeError) as exc:
            self._send(400, {"message": f"invalid request: {exc}"}, "ValidationException")
