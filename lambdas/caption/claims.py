"""The claim: a lease on ``claims/<path>.<etag>.json`` that makes the paid model call happen once.

Standard SQS may hand a second copy of a message (even with the same MessageId) to another worker
while the first is still running, so who holds a claim says nothing about whether it is alive.
The rules (README "Consistency rules"):

- take: a create-only put (``IfNoneMatch="*"``);
- take over: only a claim older than the lease (the caption function's timeout plus a margin, so
  its holder's invocation has certainly ended), whoever holds it, with a put conditional on the
  ETag read (two late-comers cannot both win);
- release: a delete conditional on the ETag of our own put, so a release never removes a claim
  that someone else has taken over since.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from lambdas.shared import keys
from lambdas.shared.observability import logger
from lambdas.shared.storage import ObjectMissing, PreconditionFailed, Store

BATCH_HOLDER_PREFIX = "batch:"  # a backfill job's claims name it: "batch:<job name>"


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    etag: str  # of our own put: the release is conditional on it


class Claims:
    def __init__(self, store: Store, *, lease_s: float, wall: Callable[[], float]) -> None:
        self._store = store
        self._lease_s = lease_s
        self._wall = wall

    def take(
        self, source_key: str, source_etag: str, message_id: str, hold_s: float | None = None
    ) -> Claim | None:
        """Our claim, or None while a live one (younger than the lease) is held by anyone else.

        ``hold_s`` (a batch job's lifetime) keeps the claim live that long even past the lease:
        its document says ``held_until``, which every taker honours.
        """
        key = keys.claim_key(source_key, source_etag)
        now = self._wall()
        document: dict[str, object] = {
            "message_id": message_id,
            "claimed_at": now,
            "source_key": source_key,
            "source_etag": source_etag,
        }
        if hold_s is not None:
            document["held_until"] = now + hold_s
        try:
            return Claim(key, self._store.put_json(key, document, if_none_match=True))
        except PreconditionFailed:
            pass
        try:
            raw, info = self._store.get_bytes(key)
        except ObjectMissing:
            # Released between our put and our read: one more create-only attempt.
            try:
                return Claim(key, self._store.put_json(key, document, if_none_match=True))
            except PreconditionFailed:
                return None
        claimed_at = claimed_at_of(raw)
        if claimed_at is not None and self._wall() - claimed_at <= self._lease_s:
            return None
        if self._wall() < held_until_of(raw):
            return None  # held by a running batch job
        try:
            etag = self._store.put_json(key, document, if_match=info.etag)
        except (PreconditionFailed, ObjectMissing):
            return None  # someone else took it over (or released it) first
        logger.info("expired claim taken over", extra={"claim_key": key, "claimed_at": claimed_at})
        return Claim(key, etag)

    def batch_job_holding(self, source_key: str, source_etag: str) -> str | None:
        """The job name when a batch job's claim (holder ``batch:<job>``, ``held_until`` ahead)
        holds this version now; None for an online holder, an expired hold or no claim."""
        try:
            raw, _ = self._store.get_bytes(keys.claim_key(source_key, source_etag))
        except ObjectMissing:
            return None
        if self._wall() >= held_until_of(raw):
            return None
        try:
            holder = json.loads(raw).get("message_id")
        except (ValueError, AttributeError):
            return None
        if isinstance(holder, str) and holder.startswith(BATCH_HOLDER_PREFIX):
            return holder[len(BATCH_HOLDER_PREFIX) :] or None
        return None

    def release(self, claim: Claim) -> None:
        """Best effort: a claim left behind only delays a duplicate until its lease expires."""
        try:
            self._store.delete(claim.key, if_match=claim.etag)
        except (PreconditionFailed, ObjectMissing):
            logger.warning(
                "claim was taken over before its release; left to its holder", extra={"claim_key": claim.key}
            )
        except Exception:
            logger.warning("could not release the claim", exc_info=True)


def claimed_at_of(raw: bytes) -> float | None:
    """When a claim document was taken (epoch seconds); None if unreadable (treated as expired)."""
    try:
        return float(json.loads(raw)["claimed_at"])
    except (ValueError, TypeError, KeyError):
        return None


def held_until_of(raw: bytes) -> float:
    """Until when a batch job holds the claim (epoch seconds); 0 when not held by one."""
    try:
        return float(json.loads(raw).get("held_until") or 0)
    except (ValueError, TypeError, AttributeError):
        return 0.0
