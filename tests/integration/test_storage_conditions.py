"""The S3 adapter sends its conditions to S3: IfNoneMatch / IfMatch on put, IfMatch on delete.

Issue 11 items 1-3 rest on them (``versions.publish``, ``clear_stale``, claims). The unit tier
checks the protocol on the in-memory store; this checks that ``S3Store`` really asks S3 for the
condition (moto honours it) and turns a 412 into ``PreconditionFailed``.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from lambdas.shared.storage import ObjectMissing, PreconditionFailed, S3Store

pytestmark = pytest.mark.integration

BUCKET = "storage-conditions-bucket"
KEY = "captions/a.jpg.json"


@pytest.fixture
def store(aws_env: None) -> Iterator[S3Store]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield S3Store(s3, BUCKET)


def _body(store: S3Store) -> bytes:
    return store.get_bytes(KEY)[0]


def test_given_an_object_then_a_create_only_put_is_refused_and_leaves_it(store: S3Store) -> None:
    store.put_bytes(KEY, b"first", "text/plain", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_bytes(KEY, b"second", "text/plain", if_none_match=True)
    assert _body(store) == b"first"


def test_given_a_replaced_object_then_a_put_on_the_old_etag_is_refused(store: S3Store) -> None:
    old = store.put_bytes(KEY, b"v0", "text/plain")
    newer = store.put_bytes(KEY, b"v2", "text/plain")
    with pytest.raises(PreconditionFailed):
        store.put_bytes(KEY, b"v1", "text/plain", if_match=old)
    assert _body(store) == b"v2"
    # ... and a put on the ETag that is there now goes through
    store.put_bytes(KEY, b"v3", "text/plain", if_match=newer)
    assert _body(store) == b"v3"


def test_given_a_replaced_object_then_a_delete_on_the_old_etag_is_refused(store: S3Store) -> None:
    old = store.put_json(KEY, {"v": 0})
    newer = store.put_json(KEY, {"v": 2})
    with pytest.raises(PreconditionFailed):
        store.delete(KEY, if_match=old)
    assert store.head(KEY) is not None
    store.delete(KEY, if_match=newer)
    assert store.head(KEY) is None
    with pytest.raises(ObjectMissing):
        store.delete(KEY, if_match=newer)
