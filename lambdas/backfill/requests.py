"""The backfill request: which image versions the operator asked for, as a document. Pure.

``imgcap backfill`` writes ``batch/requests/<backfill id>-000.json``; its ObjectCreated event
starts the submit function. What one job cannot hold (record and byte limits, or the function's
time) goes on in ``<backfill id>-001.json`` and so on, which starts the next submit: a backfill is
resumable by construction, each part one job.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from lambdas.shared.contract import BATCH_REQUESTS_PREFIX

REQUEST_VERSION = 1
_ID = re.compile(r"^[A-Za-z0-9]{1,24}$")
_KEY = re.compile(rf"^{re.escape(BATCH_REQUESTS_PREFIX)}([A-Za-z0-9]{{1,24}})-([0-9]{{3,6}})\.json$")


class InvalidRequest(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Item:
    key: str
    etag: str


@dataclass(frozen=True, slots=True)
class BackfillRequest:
    backfill_id: str
    part: int
    items: tuple[Item, ...]
    created_at: str
    prefix: str = ""

    @property
    def key(self) -> str:
        return request_key(self.backfill_id, self.part)

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "v": REQUEST_VERSION,
            "backfill_id": self.backfill_id,
            "part": self.part,
            "prefix": self.prefix,
            "created_at": self.created_at,
            "items": [{"key": i.key, "etag": i.etag} for i in self.items],
        }
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def continued(self, items: list[Item]) -> BackfillRequest:
        return BackfillRequest(self.backfill_id, self.part + 1, tuple(items), self.created_at, self.prefix)

    @classmethod
    def from_json(cls, raw: bytes) -> BackfillRequest:
        try:
            body = json.loads(raw)
            if body.get("v") != REQUEST_VERSION:
                raise InvalidRequest(f"unknown request version {body.get('v')!r}")
            backfill_id = str(body["backfill_id"])
            if not _ID.match(backfill_id):
                raise InvalidRequest(f"invalid backfill id {backfill_id!r}")
            items = tuple(Item(str(i["key"]), str(i["etag"])) for i in body["items"])
            return cls(
                backfill_id,
                int(body["part"]),
                items,
                str(body.get("created_at", "")),
                str(body.get("prefix", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, InvalidRequest):
                raise
            raise InvalidRequest(f"not a backfill request: {exc}") from exc


def request_key(backfill_id: str, part: int) -> str:
    if not _ID.match(backfill_id):
        raise InvalidRequest(f"invalid backfill id {backfill_id!r}")
    return f"{BATCH_REQUESTS_PREFIX}{backfill_id}-{part:03d}.json"


def is_request_key(key: str) -> bool:
    return bool(_KEY.match(key))
