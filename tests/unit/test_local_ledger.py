"""imgcap.local.ledger: which files a run uploads, and which final state each upload reached.

In-memory stand-ins for S3 and SQS: the ledger reads the bucket through imgcap.ops.bucket."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from imgcap.local.ledger import Ledger, Upload, Uploader, collect_files
from imgcap.local.options import LocalRunError
from imgcap.local.provision import LocalStack
from lambdas.shared import keys

pytestmark = pytest.mark.unit

STACK = LocalStack(
    stack_name="T",
    bucket="b",
    ssm_prefix="/t",
    queue_url="q",
    queue_arn="arn:q",
    dlq_url="dlq",
    events_queue_url="events",
    resize_failure_queue_url="failures",
    max_receive_count=3,
    visibility_timeout_s=30,
)


class FakeS3:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}  # key -> (body, etag)
        self.refuse: set[str] = set()
        self.listed: list[str] = []  # the prefix of every listing, in order

    def put(self, key: str, doc: Any, etag: str = "e") -> None:
        self.objects[key] = (json.dumps(doc).encode(), etag)

    def get_paginator(self, name: str) -> Any:
        assert name == "list_objects_v2"
        fake = self

        class Paginator:
            def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
                fake.listed.append(Prefix)
                contents = [
                    {"Key": k, "Size": len(body), "ETag": f'"{etag}"'}
                    for k, (body, etag) in sorted(fake.objects.items())
                    if k.startswith(Prefix)
                ]
                return [{"Contents": contents}]

        return Paginator()

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        return {"Body": io.BytesIO(self.objects[Key][0])}

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> dict[str, Any]:
        if Key in self.refuse:
            raise RuntimeError("access denied")
        self.objects[Key] = (Body, f"etag-{Key}")
        return {"ETag": f'"etag-{Key}"'}


class FakeSqs:
    """Visible messages per queue; a receive hides them until their visibility is set back to 0."""

    def __init__(self) -> None:
        self.queues: dict[str, list[dict[str, Any]]] = {"dlq": [], "failures": []}
        self.hidden: dict[str, dict[str, Any]] = {}  # receipt handle -> (queue, message)

    def receive_message(self, QueueUrl: str, **_: Any) -> dict[str, Any]:
        messages, self.queues[QueueUrl] = self.queues[QueueUrl][:10], self.queues[QueueUrl][10:]
        out = []
        for i, message in enumerate(messages):
            handle = f"{QueueUrl}-{len(self.hidden)}-{i}"
            self.hidden[handle] = {"queue": QueueUrl, "message": message}
            out.append({"MessageId": str(id(message)), "ReceiptHandle": handle, **message})
        return {"Messages": out}

    def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        for entry in Entries:
            held = self.hidden.pop(entry["ReceiptHandle"])
            self.queues[held["queue"]].append(held["message"])
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}


def upload(key: str, etag: str = "e1") -> Upload:
    return Upload(key=key, path=Path("/nonexistent"), size=1, etag=etag)


def test_collect_files_lists_every_file_below_the_folder_as_an_images_key(tmp_path: Path) -> None:
    # Given nested files, when collected, then sorted keys with POSIX paths below images/
    (tmp_path / "day 1").mkdir()
    (tmp_path / "day 1" / "b.png").write_bytes(b"b")
    (tmp_path / "a.jpg").write_bytes(b"a")
    assert [k for k, _ in collect_files(tmp_path)] == ["images/a.jpg", "images/day 1/b.png"]

    # Given a path that is not a folder, then the run cannot start
    with pytest.raises(LocalRunError, match="is not a directory"):
        collect_files(tmp_path / "a.jpg")


def test_refresh_reads_records_for_the_uploaded_etag_and_the_queues() -> None:
    # Given four uploads: captioned, rejected, dead-lettered, and one whose caption is for an older ETag
    s3, sqs = FakeS3(), FakeSqs()
    ledger = Ledger(s3, sqs, STACK)
    for key in ("images/c.png", "images/r.png", "images/d.png", "images/old.png"):
        ledger.add_upload(upload(key))
    s3.put(keys.caption_key("images/c.png"), {"source": {"etag": "e1"}, "caption": "A cat."})
    s3.put(keys.error_key("images/r.png"), {"source": {"etag": "e1"}, "error_code": "corrupt_image"})
    s3.put(keys.caption_key("images/old.png"), {"source": {"etag": "e0"}, "caption": "Stale."})
    s3.put(keys.encoded_key("images/c.png"), "base64")
    sqs.queues["dlq"].append(
        {
            "Body": json.dumps({"source_key": "images/d.png", "source_etag": "e1"}),
            "Attributes": {"ApproximateReceiveCount": "4"},
        }
    )

    # When the ledger is refreshed
    ledger.refresh()

    # Then each upload has its final state (or none), and the DLQ count leaves out our own peek
    assert ledger.states() == {
        "images/c.png": "captioned",
        "images/r.png": "rejected",
        "images/d.png": "dead_lettered",
        "images/old.png": None,
    }
    assert ledger.encoded == {"images/c.png"}
    assert ledger.dead_lettered["images/d.png"]["receive_count"] == 3
    # and the DLQ message is still there, visible (a peek, not a receive that hides it for hours)
    assert [json.loads(m["Body"])["source_key"] for m in sqs.queues["dlq"]] == ["images/d.png"]
    assert ledger.caption_for(ledger.uploads["images/c.png"]) == {
        "source": {"etag": "e1"},
        "caption": "A cat.",
    }


def test_base64_images_is_listed_only_while_some_upload_is_not_known_to_be_encoded() -> None:
    # Given two uploads, both encoded
    s3, sqs = FakeS3(), FakeSqs()
    ledger = Ledger(s3, sqs, STACK)
    for key in ("images/a.png", "images/b.png"):
        ledger.add_upload(upload(key))
        s3.put(keys.encoded_key(key), "base64")
    ledger.refresh()
    assert ledger.encoded == {"images/a.png", "images/b.png"}
    assert s3.listed.count(keys.ENCODED_PREFIX) == 1

    # When refreshed again, then base64_images/ is not listed again (the others still are)
    ledger.refresh()
    assert s3.listed.count(keys.ENCODED_PREFIX) == 1
    assert s3.listed.count(keys.CAPTIONS_PREFIX) == 2

    # When a new upload arrives, not yet encoded, then it is listed until that one is
    ledger.add_upload(upload("images/c.png"))
    ledger.refresh()
    assert s3.listed.count(keys.ENCODED_PREFIX) == 2
    assert ledger.encoded == {"images/a.png", "images/b.png"}
    s3.put(keys.encoded_key("images/c.png"), "base64")
    ledger.refresh()
    ledger.refresh()
    assert s3.listed.count(keys.ENCODED_PREFIX) == 3
    assert ledger.encoded == {"images/a.png", "images/b.png", "images/c.png"}


def test_a_caption_beats_an_error_record_and_an_upload_without_etag_is_never_final() -> None:
    ledger = Ledger(FakeS3(), FakeSqs(), STACK)
    both = upload("images/x.png")
    ledger.captions[keys.caption_key(both.key)] = ("e", {"source": {"etag": "e1"}})
    ledger.errors[keys.error_key(both.key)] = ("e", {"source": {"etag": "e1"}})
    assert ledger.state(both) == "captioned"
    assert ledger.state(upload("images/x.png", etag="")) is None


def test_uploader_enters_stored_uploads_and_keeps_the_reason_for_failed_ones(tmp_path: Path) -> None:
    # Given two files, one of which the bucket refuses
    (tmp_path / "ok.png").write_bytes(b"ok")
    (tmp_path / "no.png").write_bytes(b"no")
    s3 = FakeS3()
    s3.refuse.add("images/no.png")
    ledger = Ledger(s3, FakeSqs(), STACK)
    uploader = Uploader(ledger)

    # When every file is uploaded
    uploader.upload_all(s3, collect_files(tmp_path), "b")

    # Then the stored one is in the ledger with its ETag, the refused one is reported with why
    assert uploader.uploaded == 1
    assert list(ledger.uploads) == ["images/ok.png"]
    assert ledger.uploads["images/ok.png"].etag == "etag-images/ok.png"
    assert uploader.errors == [("images/no.png", "access denied")]
