"""Opt-in S3 object tags from a structured caption's keywords: the merge (pure) and its two S3 calls.

S3 replaces an object's whole tag set on every ``PutObjectTagging``, allows at most 10 tags, keys of
up to 128 and values of up to 256 characters (letters, digits, spaces and ``+ - = . _ : / @``), and
reserves the ``aws:`` prefix (S3 user guide, "Categorizing your objects using tags"). So the caption
stage reads the current set, and writes it back merged:

- every tag the object already has that the pipeline did not write is kept, unchanged, first;
- the pipeline's own tags (value ``imgcap``) from an earlier caption are replaced by the new ones;
- each keyword becomes a tag ``<keyword>=imgcap``, in the model's order, while the set has room;
  a keyword whose key the user already uses is skipped (the user's value stays).

Written after the caption, best effort: a failure is logged and counted (``ObjectTagsFailed``),
never a retry of the paid call. The source's ETag is checked just before the write, so a newer
upload is not tagged with an older version's keywords (S3 has no conditional tagging write; the
window between the check and the write is the only one left).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from lambdas.shared.contract import OBJECT_TAG_MARK, S3_MAX_TAGS, S3_TAG_KEY_MAX

_NOT_ALLOWED = re.compile(r"[^\w +\-=.:/@]", re.UNICODE)


def tag_key_for(keyword: str) -> str | None:
    """A keyword as an S3 tag key (disallowed characters dropped), or None if nothing usable remains."""
    key = " ".join(_NOT_ALLOWED.sub(" ", keyword).split())[:S3_TAG_KEY_MAX].strip()
    if not key or key.lower().startswith("aws:"):
        return None
    return key


def merge_tags(
    existing: Sequence[Mapping[str, str]], keywords: Sequence[str], limit: int = S3_MAX_TAGS
) -> list[dict[str, str]]:
    """The tag set to write: the user's tags kept, ours replaced, new keywords while there is room."""
    users = [
        {"Key": str(t["Key"]), "Value": str(t.get("Value", ""))}
        for t in existing
        if str(t.get("Value", "")) != OBJECT_TAG_MARK
    ]
    taken = {t["Key"] for t in users}
    merged = list(users)
    for keyword in keywords:
        if len(merged) >= limit:
            break
        key = tag_key_for(keyword)
        if key is None or key in taken:
            continue
        taken.add(key)
        merged.append({"Key": key, "Value": OBJECT_TAG_MARK})
    return merged


class ObjectTagger(Protocol):
    def tag(self, key: str, keywords: Sequence[str]) -> list[dict[str, str]]: ...


class S3ObjectTags:
    """GetObjectTagging / PutObjectTagging on one bucket (the role may do this on ``images/*`` only)."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def tag(self, key: str, keywords: Sequence[str]) -> list[dict[str, str]]:
        """Merge ``keywords`` into the object's tags and write the set (unless nothing changes)."""
        existing = self._s3.get_object_tagging(Bucket=self._bucket, Key=key).get("TagSet", [])
        merged = merge_tags(existing, keywords)
        if merged != [{"Key": t["Key"], "Value": t.get("Value", "")} for t in existing]:
            self._s3.put_object_tagging(Bucket=self._bucket, Key=key, Tagging={"TagSet": merged})
        return merged
