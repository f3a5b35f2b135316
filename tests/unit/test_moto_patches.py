"""The local runtime's speed-ups inside the moto process give the answers moto's own code gives."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.utils import parse_to_aware_datetime

from imgcap.local import servers

pytestmark = pytest.mark.unit


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Apply the patches for one test only (monkeypatch puts moto's own functions back)."""
    from moto.core import serialize
    from moto.sqs import models

    for module, names in (
        (serialize, ("parse_to_aware_datetime", "_imgcap_timestamps_patched")),
        (models, ("unix_time", "unix_time_millis", "_imgcap_clock_patched")),
    ):
        for name in names:
            monkeypatch.setattr(module, name, getattr(module, name, False), raising=False)
    servers._timestamps_parsed_by_fromisoformat()
    servers._sqs_clock_from_time()


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-01T12:00:00.000Z",  # what moto stores as an S3 object's LastModified
        "2026-12-01T12:00:00Z",
        "2026-12-01T12:00:00",  # no zone: UTC, as botocore reads it
        "2026-12-01T12:00:00.123456+02:00",
        "Tue, 01 Dec 2026 12:00:00 GMT",  # not ISO: botocore's parser, as before
        datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
        datetime(2026, 12, 1, 12, 0),
    ],
)
def test_listed_timestamps_parse_to_what_botocore_gives(patched: None, value: object) -> None:
    from moto.core import serialize

    fast, slow = serialize.parse_to_aware_datetime(value), parse_to_aware_datetime(value)
    assert fast == slow
    assert fast.utcoffset() == slow.utcoffset()


def test_the_sqs_clock_is_posix_time_and_a_given_datetime_still_converts(patched: None) -> None:
    from moto.core import utils
    from moto.sqs import models

    before = time.time()
    now_s, now_ms = models.unix_time(), models.unix_time_millis()
    after = time.time()
    assert before <= now_s <= after
    assert before * 1000 <= now_ms <= after * 1000
    # moto's own reading agrees with it (both are seconds since the epoch, UTC)
    assert abs(utils.unix_time() - time.time()) < 5
    given = datetime(2026, 12, 1, 12, 0) + timedelta(seconds=1.5)
    assert models.unix_time(given) == utils.unix_time(given)
    assert models.unix_time_millis(given) == utils.unix_time_millis(given)


class _Version(str):
    """Stands in for moto's FakeKey: a value that the store disposes of when its key is deleted."""

    def dispose(self) -> None:
        pass


def test_a_key_deleted_while_the_bucket_is_listed_leaves_the_listing_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto.s3 import utils

    store_class = utils._VersionedKeyStore
    names = ("_iteritems", "items", "iteritems", "_itervalues", "values", "itervalues")
    names += ("_iterlists", "lists", "iterlists", "_imgcap_snapshot_patched")
    for name in names:  # monkeypatch puts moto's own methods back after the test
        monkeypatch.setattr(store_class, name, getattr(store_class, name, False), raising=False)

    def list_while_deleting() -> list[tuple[str, str]]:
        store = store_class()
        for name in ("a", "b", "c"):
            store[name] = _Version(f"object {name}")
        listed = []
        for key, value in store.items():
            if key == "a":
                store.pop("b")  # another request releases a claim mid-listing
            listed.append((key, value))
        return listed

    # Given moto's own iteration, the deleted key fails the whole listing
    with pytest.raises(KeyError):
        list_while_deleting()
    # When the patch is applied, the listing is the bucket as it was when the listing began
    servers._listings_from_one_snapshot()
    assert list_while_deleting() == [("a", "object a"), ("b", "object b"), ("c", "object c")]
    store = store_class()
    store["k"] = "v1"
    store["k"] = "v2"  # a second version: the listing gives the newest, as moto's own does
    assert list(store.items()) == [("k", "v2")]
    assert list(store.values()) == ["v2"]
    assert list(store.lists()) == [("k", ["v1", "v2"])]
