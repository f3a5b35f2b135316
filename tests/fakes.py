"""In-memory fakes of the adapters, honouring S3's conditional requests like the real thing.

``MemoryStore`` implements ``lambdas.shared.storage.Store``: ETags are the MD5 of the body (as S3
gives for a single-part put), ``IfNoneMatch="*"`` and ``IfMatch`` raise ``PreconditionFailed`` when
they do not hold, a conditional delete of a missing key raises ``ObjectMissing``. ``on(op, key,
action)`` runs ``action`` once, just before the next ``op`` on ``key`` ("head", "get", "put",
"delete"): that is how a test makes the other upload or delivery happen at an exact moment,
deterministically, with no threads and no sleeps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lambdas.shared.storage import ObjectInfo, ObjectMissing, PreconditionFailed


@dataclass
class _Object:
    body: bytes
    etag: str
    metadata: dict[str, str]
    content_type: str


@dataclass
class MemoryStore:
    bucket: str = "memory-bucket"
    objects: dict[str, _Object] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    _hooks: list[tuple[str, str, Callable[[], None]]] = field(default_factory=list)

    # ------------------------------------------------------------------ test helpers

    def on(self, op: str, key: str, action: Callable[[], None]) -> None:
        """Run ``action`` once, right before the next ``op`` on ``key``."""
        self._hooks.append((op, key, action))

    def upload(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> str:
        """An unconditional put, as a user's upload (returns the ETag)."""
        return self.put_bytes(key, body, "application/octet-stream", metadata=metadata)

    def json(self, key: str) -> Any:
        return json.loads(self.objects[key].body)

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def _fire(self, op: str, key: str) -> None:
        self.calls.append((op, key))
        for hook in list(self._hooks):
            if hook[0] == op and hook[1] == key:
                self._hooks.remove(hook)
                hook[2]()

    def _info(self, key: str, obj: _Object) -> ObjectInfo:
        return ObjectInfo(key=key, etag=obj.etag, size=len(obj.body), metadata=dict(obj.metadata))

    # ------------------------------------------------------------------ Store

    def head(self, key: str) -> ObjectInfo | None:
        self._fire("head", key)
        obj = self.objects.get(key)
        return None if obj is None else self._info(key, obj)

    def get_bytes(self, key: str, if_match: str | None = None) -> tuple[bytes, ObjectInfo]:
        self._fire("get", key)
        obj = self.objects.get(key)
        if obj is None:
            raise ObjectMissing(key)
        if if_match is not None and if_match.strip('"') != obj.etag:
            raise PreconditionFailed(key)
        return obj.body, self._info(key, obj)

    def put_bytes(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: dict[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        self._fire("put", key)
        existing = self.objects.get(key)
        if if_none_match and existing is not None:
            raise PreconditionFailed(key)
        if if_match is not None:
            if existing is None:
                raise ObjectMissing(key)
            if if_match.strip('"') != existing.etag:
                raise PreconditionFailed(key)
        etag = hashlib.md5(body).hexdigest()
        self.objects[key] = _Object(bytes(body), etag, dict(metadata or {}), content_type)
        return etag

    def put_json(
        self,
        key: str,
        document: Any,
        metadata: dict[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        body = json.dumps(document, ensure_ascii=False, sort_keys=True).encode()
        return self.put_bytes(key, body, "application/json", metadata, if_none_match, if_match)

    def delete(self, key: str, if_match: str | None = None) -> None:
        self._fire("delete", key)
        existing = self.objects.get(key)
        if if_match is not None:
            if existing is None:
                raise ObjectMissing(key)
            if if_match.strip('"') != existing.etag:
                raise PreconditionFailed(key)
        self.objects.pop(key, None)


@dataclass
class MemoryQueue:
    sent: list[str] = field(default_factory=list)
    visibility: dict[str, int] = field(default_factory=dict)

    def send(self, body: str) -> str:
        self.sent.append(body)
        return f"m-{len(self.sent)}"

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self.visibility[receipt_handle] = seconds
