"""What the index stage decides, without I/O: jobs from queue messages, vector keys, metadata, filters.

- ``jobs_from_body``: one SQS body (an S3 event notification, S3's test event, or a reindex
  message from ``imgcap reindex``) -> the index jobs it asks for. Only ``captions/`` writes upsert;
  removals under ``captions/`` or ``images/`` delete. Everything else (other prefixes, test
  events) yields nothing, so no write anywhere can make the stage do more than one job per event.
- ``vector_key``: one key per image, derived from its caption key, so a re-upload (a new caption
  at the same key) replaces the vector, and a deleted image or caption names the vector to delete.
- ``vector_metadata``: filterable ``folder`` and ``tags`` (small: S3 Vectors allows 2 KB of
  filterable metadata), non-filterable ``source_key``, ``source_etag`` and the caption's start.
- ``query_filter``: the S3 Vectors filter for ``--folder`` / ``--tag``.

The stage writes only to its vector index: nothing under ``captions/`` or ``images/``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import unquote_plus

from lambdas.shared import keys
from lambdas.shared.contract import (
    CAPTION_METADATA_CHARS,
    CAPTIONS_PREFIX,
    IMAGES_PREFIX,
    MAX_FILTERABLE_METADATA_BYTES,
    META_CAPTION,
    META_FOLDER,
    META_SOURCE_ETAG,
    META_SOURCE_KEY,
    META_TAGS,
    ROOT_FOLDER,
)

REINDEX_MESSAGE_VERSION = 1
MAX_TAGS = 32
MAX_TAG_CHARS = 64
# Room kept inside the 2 KB filterable budget for the folder and the JSON around the values.
_FILTERABLE_RESERVE_BYTES = 256


class Action(Enum):
    UPSERT = "upsert"  # (re)embed the caption at caption_key
    REMOVE = "remove"  # delete the vector, if the caption (or image) is really gone


@dataclass(frozen=True, slots=True)
class IndexJob:
    action: Action
    caption_key: str
    reason: str  # the event that asked for it: "s3:ObjectCreated:Put", "reindex", ...


class InvalidIndexMessage(ValueError):
    """A body that is neither an S3 notification nor a reindex message."""


def reindex_message(caption_key: str) -> str:
    """The body ``imgcap reindex`` sends for one caption."""
    return json.dumps({"index_v": REINDEX_MESSAGE_VERSION, "caption_key": caption_key})


def _caption_key_of(object_key: str) -> str | None:
    """The caption key an object under captions/ or images/ stands for; None for anything else."""
    if keys.is_folder_marker(object_key):
        return None
    if object_key.startswith(CAPTIONS_PREFIX) and object_key.endswith(keys.CAPTION_SUFFIX):
        return object_key
    if object_key.startswith(IMAGES_PREFIX) and len(object_key) > len(IMAGES_PREFIX):
        return keys.caption_key(object_key)
    return None


def _job_from_record(record: Mapping[str, Any]) -> IndexJob | None:
    event = str(record.get("eventName", ""))
    try:
        raw_key = str(record["s3"]["object"]["key"])
    except (KeyError, TypeError) as exc:
        raise InvalidIndexMessage(f"S3 record without s3.object.key: {exc}") from exc
    object_key = unquote_plus(raw_key)  # S3 notifications URL-encode keys (space as '+')
    caption_key = _caption_key_of(object_key)
    if caption_key is None:
        return None
    if event.startswith("ObjectCreated") and object_key.startswith(CAPTIONS_PREFIX):
        return IndexJob(Action.UPSERT, caption_key, f"s3:{event}")
    if event.startswith("ObjectRemoved"):
        return IndexJob(Action.REMOVE, caption_key, f"s3:{event}")
    return None  # e.g. a new upload under images/: its caption will come


def jobs_from_body(body: str) -> list[IndexJob]:
    """The jobs one queue message asks for (possibly none)."""
    try:
        document = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise InvalidIndexMessage(f"message body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidIndexMessage("message body is not a JSON object")
    if document.get("Event") == "s3:TestEvent":
        return []
    if "index_v" in document:
        caption_key = document.get("caption_key")
        if document.get("index_v") != REINDEX_MESSAGE_VERSION or not isinstance(caption_key, str):
            raise InvalidIndexMessage(f"unknown reindex message: {body[:200]!r}")
        if not caption_key.startswith(CAPTIONS_PREFIX):
            raise InvalidIndexMessage(f"reindex key {caption_key!r} is not under {CAPTIONS_PREFIX}")
        return [IndexJob(Action.UPSERT, caption_key, "reindex")]
    records = document.get("Records")
    if not isinstance(records, list):
        raise InvalidIndexMessage("message has neither Records nor a reindex key")
    return [job for job in (_job_from_record(r) for r in records if isinstance(r, dict)) if job]


def vector_key(caption_key: str) -> str:
    """``captions/trips/a b.jpg.json`` -> ``trips/a b.jpg``: the caption's path, one per image."""
    if not caption_key.startswith(CAPTIONS_PREFIX) or not caption_key.endswith(keys.CAPTION_SUFFIX):
        raise InvalidIndexMessage(f"{caption_key!r} is not a caption key")
    inner = caption_key[len(CAPTIONS_PREFIX) : -len(keys.CAPTION_SUFFIX)]
    if not inner:
        raise InvalidIndexMessage(f"{caption_key!r} has an empty path")
    return inner


def vector_key_for_source(source_key: str) -> str:
    return vector_key(keys.caption_key(source_key))


def folder_of(source_key: str) -> str:
    """First path segment below ``images/`` (``images/trips/a.jpg`` -> ``trips``); ``/`` at the top."""
    rel = keys.relative_path(source_key)
    head, sep, _ = rel.partition("/")
    return head if sep and head else ROOT_FOLDER


@dataclass(frozen=True, slots=True)
class CaptionFacts:
    """What the index stage reads from a caption record."""

    source_key: str
    source_etag: str
    caption: str
    encoded_key: str | None
    tags: tuple[str, ...]
    alt_text: str | None


def caption_facts(record: Mapping[str, Any]) -> CaptionFacts:
    """Parse a caption record (docs/contracts.md); ``tags``/``alt_text`` are read when present."""
    try:
        source = record["source"]
        source_key = str(source["key"])
        source_etag = str(source["etag"])
        caption = str(record["caption"])
    except (KeyError, TypeError) as exc:
        raise InvalidIndexMessage(f"caption record lacks {exc}") from exc
    encoded = record.get("encoded_key")
    alt = record.get("alt_text")
    return CaptionFacts(
        source_key=source_key,
        source_etag=source_etag,
        caption=caption,
        encoded_key=str(encoded) if isinstance(encoded, str) and encoded else None,
        tags=normalise_tags(record.get("tags")),
        alt_text=str(alt) if isinstance(alt, str) and alt.strip() else None,
    )


def normalise_tags(raw: object) -> tuple[str, ...]:
    """Lower-case, trimmed, unique tags, in order, within the filterable-metadata budget."""
    if not isinstance(raw, list | tuple):
        return ()
    seen: dict[str, None] = {}
    budget = MAX_FILTERABLE_METADATA_BYTES - _FILTERABLE_RESERVE_BYTES
    used = 0
    for item in raw:
        if not isinstance(item, str):
            continue
        tag = " ".join(item.lower().split())[:MAX_TAG_CHARS]
        if not tag or tag in seen:
            continue
        cost = len(tag.encode("utf-8")) + 3  # quotes and comma
        if used + cost > budget or len(seen) >= MAX_TAGS:
            break
        seen[tag] = None
        used += cost
    return tuple(seen)


def embedding_text(facts: CaptionFacts) -> str:
    """The text a caption's vector embeds: the caption, its alt text and tags when present."""
    parts = [facts.caption.strip()]
    if facts.alt_text:
        parts.append(facts.alt_text.strip())
    if facts.tags:
        parts.append("Tags: " + ", ".join(facts.tags) + ".")
    return "\n".join(p for p in parts if p)


def vector_metadata(facts: CaptionFacts) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        META_FOLDER: folder_of(facts.source_key),
        META_SOURCE_KEY: facts.source_key,
        META_SOURCE_ETAG: facts.source_etag,
        META_CAPTION: facts.caption[:CAPTION_METADATA_CHARS],
    }
    if facts.tags:
        metadata[META_TAGS] = list(facts.tags)
    return metadata


def query_filter(folder: str | None = None, tags: Sequence[str] = ()) -> dict[str, Any] | None:
    """``{"folder": {"$eq": F}}``, one ``$eq`` per tag (matches any element of the list), ANDed."""
    clauses: list[dict[str, Any]] = []
    if folder is not None:
        name = folder.strip().strip("/")
        clauses.append({META_FOLDER: {"$eq": name or ROOT_FOLDER}})
    for tag in tags:
        norm = " ".join(tag.lower().split())
        if norm:
            clauses.append({META_TAGS: {"$eq": norm}})
    if not clauses:
        return None
    if len(clauses) == 1:
        return clauses[0]
    return {"$and": clauses}


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
