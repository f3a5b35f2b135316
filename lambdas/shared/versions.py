"""Who wins when versions of one image race: publish only while current, never move backwards.

An image version is (source key, source ETag). It is *current* while the source object's ETag is
that ETag. Every stage output (encoded object, caption, error record) carries the version it
belongs to in its ``source-etag`` metadata, and is written here, by one protocol:

1. read the output key's state first (``snapshot``: its ETag and version, or absent);
2. then check that our version is still current (HEAD of the source);
3. then write conditionally on the snapshot (``IfNoneMatch="*"`` when absent, ``IfMatch`` on the
   ETag seen). A 412 means someone wrote in between: start again from 1 (bounded).

The order matters. Any newer upload that happened before step 2 fails step 2 (superseded); a
newer one after step 2 writes after our snapshot, so either our conditional write fails (and the
retry sees the newer upload at step 2) or the newer write lands after ours and wins. Either way
the last write is the current version's. Clearing a stale error record follows the same order
with a conditional delete. See README "Consistency rules".

A caller that has already read the output key (a ``Snapshot``) before anything that step 2 must
follow may hand it to ``publish`` for the first attempt: the order snapshot -> currency check ->
conditional write is the same, so the argument above holds unchanged, and the HEAD is saved. A
412 then still means "someone wrote after our snapshot" and the retry reads a fresh one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lambdas.shared import keys
from lambdas.shared.storage import (
    SOURCE_ETAG_META,
    ObjectInfo,
    ObjectMissing,
    PreconditionFailed,
    Store,
    put_error_record,
)

# A 412 on every attempt means several writers of this key are racing right now; the caller
# treats that as a transient fault (the message or event is retried), never as success.
PUBLISH_ATTEMPTS = 4


class Published(StrEnum):
    WRITTEN = "written"  # our record is stored
    EXISTS = "exists"  # a record of this same version is already there (left as it is)
    SUPERSEDED = "superseded"  # our version is no longer current: nothing written


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The output key's state as read by the caller (``info`` None: absent at that moment)."""

    info: ObjectInfo | None


class PublishConflict(RuntimeError):
    """The key kept changing under us; retry the whole message later."""


@dataclass(frozen=True, slots=True)
class Version:
    source_key: str
    source_etag: str | None  # None: unknown (an invalid message naming no ETag)


def version_of(info: ObjectInfo | None) -> str | None:
    """The source ETag an output object says it belongs to (None if absent or untagged)."""
    if info is None:
        return None
    return info.metadata.get(SOURCE_ETAG_META) or None


def current_etag(store: Store, source_key: str) -> str | None:
    """The source's ETag now; None when the source no longer exists."""
    info = store.head(source_key)
    return None if info is None else info.etag


def is_current(store: Store, version: Version) -> bool:
    return version.source_etag is not None and current_etag(store, version.source_key) == version.source_etag


Writer = Callable[[bool, str | None], str]  # (if_none_match, if_match) -> new ETag


def publish(
    store: Store,
    key: str,
    version: Version,
    write: Writer,
    *,
    replace_same_version: bool,
    require_current: bool = True,
    snapshot: Snapshot | None = None,
) -> Published:
    """Write ``key`` for ``version`` by the protocol above.

    ``replace_same_version``: an existing record of the same version is overwritten (an error
    record rewritten by a later attempt) instead of being kept (a caption, an encoded object).
    ``require_current=False`` skips step 2, for records about a version that cannot be current
    any more (the source was deleted before it was read): they still never overwrite a record
    written after our snapshot.

    ``snapshot``: the caller's own read of ``key``, taken before anything that must come after
    step 1 (in particular before the currency check here); used for the first attempt only.
    """
    known = snapshot
    for _ in range(PUBLISH_ATTEMPTS):
        if known is not None:
            seen, known = known.info, None  # step 1 was the caller's own read
        else:
            seen = store.head(key)
        if seen is not None and not replace_same_version and version_of(seen) == version.source_etag:
            return Published.EXISTS
        if require_current and not is_current(store, version):
            return Published.SUPERSEDED
        try:
            write(seen is None, None if seen is None else seen.etag)
        except PreconditionFailed:
            continue
        return Published.WRITTEN
    raise PublishConflict(f"{key}: changed by another writer on each of {PUBLISH_ATTEMPTS} attempts")


def clear_stale(store: Store, key: str, version: Version) -> bool:
    """Delete ``key`` if it belongs to another version while ``version`` is current.

    Used after a success to drop an older rejection. Never deletes a record of ``version`` itself,
    nor one written after our snapshot (a newer upload's rejection). True if something was deleted.
    """
    snapshot = store.head(key)
    if snapshot is None or version_of(snapshot) == version.source_etag:
        return False
    if not is_current(store, version):
        return False
    try:
        store.delete(key, if_match=snapshot.etag)
    except (PreconditionFailed, ObjectMissing):
        return False
    return True


def publish_error_record(
    store: Store, record: Mapping[str, Any], *, require_current: bool = True
) -> Published:
    """Publish an ``errors/`` record (``records.error_record``) for the version it names."""
    source = record["source"]
    version = Version(source["key"], source["etag"])

    def write(if_none_match: bool, if_match: str | None) -> str:
        return put_error_record(store, record, if_none_match=if_none_match, if_match=if_match)

    return publish(
        store,
        keys.error_key(version.source_key),
        version,
        write,
        replace_same_version=True,
        require_current=require_current and version.source_etag is not None,
    )
