"""Key layout: every artefact is a prefix + the source's path below ``images/`` + a suffix.

``images/trips/a b.jpg`` -> ``base64_images/trips/a b.jpg.txt`` -> ``captions/trips/a b.jpg.json``
(and ``errors/trips/a b.jpg.json`` when a stage rejects it). Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import re

from lambdas.shared.contract import (
    BATCH_JOBS_PREFIX,
    CAPTIONS_PREFIX,
    CLAIMS_PREFIX,
    ENCODED_PREFIX,
    ERRORS_PREFIX,
    HEALTH_PREFIX,
    IMAGES_PREFIX,
)

__all__ = ["CAPTIONS_PREFIX", "CLAIMS_PREFIX", "ENCODED_PREFIX", "ERRORS_PREFIX", "IMAGES_PREFIX"]

# One small document about the pipeline itself (not about an image): the caption stage's latest
# configuration fault, which ``imgcap status`` turns into one sentence.
CAPTION_HEALTH_KEY = f"{HEALTH_PREFIX}caption.json"
CAPACITY_HEALTH_KEY = f"{HEALTH_PREFIX}capacity.json"  # the latest capacity shortfall

ENCODED_SUFFIX = ".txt"
CAPTION_SUFFIX = ".json"
ERROR_SUFFIX = ".json"
CLAIM_SUFFIX = ".json"

# S3 keys are at most 1024 bytes of UTF-8.
MAX_KEY_BYTES = 1024
_HASH_CHARS = 16
# What the tail of a hashed relative path looks like. A path that already ends like this is hashed
# too, so a crafted short key can never derive the same key as a long, hashed one.
_HASHED_TAIL = re.compile(rf"~[0-9a-f]{{{_HASH_CHARS}}}$")


class KeyError_(ValueError):
    """A key that is not below ``images/`` (or is empty below it)."""


def is_folder_marker(key: str) -> bool:
    """Console 'Create folder' writes zero-byte keys ending in '/': they are not uploads."""
    return key.endswith("/")


def relative_path(source_key: str) -> str:
    """The source's path below ``images/``; raises ``KeyError_`` for keys outside it."""
    if not source_key.startswith(IMAGES_PREFIX) or len(source_key) == len(IMAGES_PREFIX):
        raise KeyError_(f"key {source_key!r} is not below {IMAGES_PREFIX!r}")
    return source_key[len(IMAGES_PREFIX) :]


def _derive(prefix: str, rel: str, suffix: str) -> str:
    """``prefix + rel + suffix``, or, when that is too long or ``rel`` looks hashed, a hashed form.

    The two forms cannot meet: a plain key never ends in ``~<16 hex><suffix>`` (such paths are
    hashed), and every hashed key does. Two hashed keys meet only if SHA-256 prefixes collide.
    """
    key = f"{prefix}{rel}{suffix}"
    if len(key.encode("utf-8")) <= MAX_KEY_BYTES and not _HASHED_TAIL.search(rel):
        return key
    # Keep a readable head and make it unique with a hash of the full relative path. The records
    # carry the full source key.
    digest = hashlib.sha256(rel.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    budget = MAX_KEY_BYTES - len(prefix.encode()) - len(suffix.encode()) - _HASH_CHARS - 1
    head = rel.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    return f"{prefix}{head}~{digest}{suffix}"


def encoded_key(source_key: str) -> str:
    return _derive(ENCODED_PREFIX, relative_path(source_key), ENCODED_SUFFIX)


def caption_key(source_key: str) -> str:
    return _derive(CAPTIONS_PREFIX, relative_path(source_key), CAPTION_SUFFIX)


def error_key(source_key: str) -> str:
    return _derive(ERRORS_PREFIX, relative_path(source_key), ERROR_SUFFIX)


def batch_job_document_key(job_name: str) -> str:
    """``batch/jobs/<job name>.json``: a backfill job's document (its state, written by the backfill
    functions; the caption stage reads it to know a batch hold belongs to a job that exists)."""
    return f"{BATCH_JOBS_PREFIX}{job_name}.json"


def claim_key(source_key: str, source_etag: str) -> str:
    """Short-lived lease that makes the paid model call happen once per (key, ETag)."""
    return _derive(CLAIMS_PREFIX, f"{relative_path(source_key)}.{source_etag}", CLAIM_SUFFIX)
