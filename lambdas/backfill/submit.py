"""Prepare and submit one batch job from a backfill request: the submit function's use case.

1. **Claim pass** (HEADs, in parallel): for each requested version, skip it unless it is still
   current, its encoded object belongs to it, and it has neither a caption nor a caption-stage
   error record for that ETag; then take its claim (``claims/<path>.<etag>.json``) for the job's
   lifetime (``held_until``: the online consumer sees a live claim and never pays for the image
   too) and check for a caption once more under the claim. At most one job's worth is claimed.
2. Fewer claimed than the job minimum: release the claims and send the images to the online
   caption queue instead (a batch job would be refused).
3. **Write pass** (streamed, one image in memory per reader): read each encoded object, check it
   is still this version's, write its JSONL line into the current input file (a new file before a
   line that would take it over the file limits) and its index entry. What no longer fits the job
   (bytes) or the invocation's time is released and handed on.
4. Store the record index and the job document, then ``CreateModelInvocationJob`` (Converse), with
   the job name as client request token; a failure releases every claim and raises (the request
   event is retried, then dead-lettered).
5. Whatever was not taken goes into the next part of the request, which starts the next submit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from lambdas.backfill import jsonl, records
from lambdas.backfill.adapters import BedrockJobs, FileSink
from lambdas.backfill.requests import BackfillRequest, Item
from lambdas.backfill.settings import BackfillEnv, BatchModel
from lambdas.caption import prompts
from lambdas.caption.claims import BATCH_HOLDER_PREFIX, Claim, Claims
from lambdas.caption.model import decode_png
from lambdas.shared import keys
from lambdas.shared.config import FolderPrompt, ModelSpec
from lambdas.shared.errors import Rejection
from lambdas.shared.observability import logger
from lambdas.shared.records import ImageMessage, error_record, utc_now_iso
from lambdas.shared.storage import SOURCE_ETAG_META, STAGE_META, ObjectMissing, Queue, Store
from lambdas.shared.versions import publish_error_record

CAPTION_STAGE = "caption"  # batch records are caption-stage records, like the online ones
TIME_MARGIN_S = 60.0  # kept free for the index, the job document, the create call and the hand-on
CLAIM_WORKERS = 16


class Skip(StrEnum):
    SUPERSEDED = "superseded"  # not the current version any more (or its encoded object is not)
    CAPTIONED = "captioned"  # a caption for this ETag exists
    FINAL_ERROR = "final_error"  # a caption-stage error record for this ETag exists
    NOT_ENCODED = "not_encoded"  # no encoded object: resize has not run or rejected it
    CLAIMED = "claimed"  # the online path (or another job) holds the claim
    REJECTED = "rejected"  # the encoded object is not a PNG: error record written


class Outcome(StrEnum):
    SUBMITTED = "submitted"
    ONLINE = "online"  # fewer than the job minimum: sent to the online caption queue
    NOTHING = "nothing"  # every item was skipped


@dataclass(frozen=True, slots=True)
class Candidate:
    item: Item
    claim: Claim
    width: int
    height: int
    uploaded_at: str
    made: tuple[str | None, int | None, int | None] = (None, None, None)  # policy, width, height


@dataclass(slots=True)
class SubmitResult:
    outcome: Outcome
    job_name: str | None = None
    job_arn: str | None = None
    records: int = 0
    files: int = 0
    bytes: int = 0
    online: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    handed_on: int = 0
    next_request: str | None = None


class Submitter:
    def __init__(
        self,
        *,
        store: Store,
        files: Any,  # adapters.S3Files (open, delete)
        jobs: BedrockJobs,
        queue: Queue,
        env: BackfillEnv,
        spec: ModelSpec | BatchModel,
        remaining_s: Callable[[], float],
        wall: Callable[[], float] = time.time,
        workers: int = CLAIM_WORKERS,
    ) -> None:
        self._store, self._files, self._jobs, self._queue = store, files, jobs, queue
        self.store = store  # the handler reads the request document through the same adapter
        model = spec if isinstance(spec, BatchModel) else BatchModel(spec)
        self._env, self._spec, self._rules = env, model.spec, model.rules
        self._limits = env.limits
        self._remaining_s = remaining_s
        self._wall = wall
        self._workers = workers
        self._claims = Claims(store, lease_s=env.online_claim_lease_s, wall=wall)

    # ------------------------------------------------------------------ the use case

    def submit(self, request: BackfillRequest) -> SubmitResult:
        name = records.job_name(self._env.stack_name, request.backfill_id, request.part)
        result = SubmitResult(Outcome.NOTHING, job_name=name)
        candidates, rest = self._claim_pass(request, name, result)
        if len(candidates) < self._limits.min_records:
            self._send_online(candidates, result)
            self._hand_on(request, rest, result)
            return result
        written, rest_written = self._write_pass(name, candidates, result)
        if len(written) < self._limits.min_records:
            # Some were superseded or rejected while being read: too few left for a job.
            self._files_cleanup(name, result)
            self._send_online([w.candidate for w in written], result)
            self._hand_on(request, rest_written + rest, result)
            return result
        self._create(name, request, written, result)
        self._hand_on(request, rest_written + rest, result)
        return result

    # ------------------------------------------------------------------ 1. claims

    def _claim_pass(
        self, request: BackfillRequest, name: str, result: SubmitResult
    ) -> tuple[list[Candidate], list[Item]]:
        hold_s = self._limits.timeout_hours * 3600 + self._limits.claim_margin_s
        items = list(request.items)
        taken: list[Candidate] = []
        position = 0
        chunk = max(1, self._workers * 4)
        with ThreadPoolExecutor(max_workers=self._workers) as pool:
            while position < len(items) and len(taken) < self._limits.max_records_per_job:
                if self._remaining_s() < TIME_MARGIN_S * 2:
                    break
                room = self._limits.max_records_per_job - len(taken)
                batch = items[position : position + min(chunk, room)]
                position += len(batch)
                for item, outcome in zip(
                    batch, pool.map(lambda i: self._claim(i, name, hold_s), batch), strict=True
                ):
                    if isinstance(outcome, Candidate):
                        taken.append(outcome)
                    else:
                        result.skipped[outcome.value] = result.skipped.get(outcome.value, 0) + 1
                        logger.debug("skipped", extra={"source_key": item.key, "reason": outcome.value})
        return taken, items[position:]

    def _claim(self, item: Item, name: str, hold_s: float) -> Candidate | Skip:
        store = self._store
        source = store.head(item.key)
        if source is None or source.etag != item.etag:
            return Skip.SUPERSEDED
        if self._has_caption(item):
            return Skip.CAPTIONED
        if self._has_final_error(item):
            return Skip.FINAL_ERROR
        encoded = store.head(keys.encoded_key(item.key))
        if encoded is None:
            return Skip.NOT_ENCODED
        if encoded.metadata.get(SOURCE_ETAG_META) != item.etag:
            return Skip.SUPERSEDED
        holder = f"{BATCH_HOLDER_PREFIX}{name}"
        claim = self._claims.take(item.key, item.etag, holder, hold_s=hold_s) or self._own_claim(item, holder)
        if claim is None:
            return Skip.CLAIMED
        if self._has_caption(item):  # the check that cannot race: writers store before releasing
            self._claims.release(claim)
            return Skip.CAPTIONED
        uploaded = source.last_modified
        uploaded_at = (
            uploaded.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            if isinstance(uploaded, datetime)
            else utc_now_iso()
        )
        return Candidate(
            item,
            claim,
            width=int(encoded.metadata.get("source-width", "0") or 0),
            height=int(encoded.metadata.get("source-height", "0") or 0),
            uploaded_at=uploaded_at,
            made=records.made_of(encoded.metadata),
        )

    def _own_claim(self, item: Item, holder: str) -> Claim | None:
        """Our own claim from an earlier attempt of this very request (a retried event): still ours."""
        key = keys.claim_key(item.key, item.etag)
        try:
            raw, info = self._store.get_bytes(key)
            document = json.loads(raw)
        except (ObjectMissing, ValueError):
            return None
        if isinstance(document, dict) and document.get("message_id") == holder:
            return Claim(key, info.etag)
        return None

    def _has_caption(self, item: Item) -> bool:
        info = self._store.head(keys.caption_key(item.key))
        return info is not None and info.metadata.get(SOURCE_ETAG_META) == item.etag

    def _has_final_error(self, item: Item) -> bool:
        info = self._store.head(keys.error_key(item.key))
        return (
            info is not None
            and info.metadata.get(STAGE_META) == CAPTION_STAGE
            and info.metadata.get(SOURCE_ETAG_META) == item.etag
        )

    # ------------------------------------------------------------------ 3. input files

    def _write_pass(
        self, name: str, candidates: list[Candidate], result: SubmitResult
    ) -> tuple[list[_Written], list[Item]]:
        splitter = jsonl.Splitter(self._limits)
        sink: FileSink | None = None
        written: list[_Written] = []
        rest: list[Item] = []
        try:
            for position, (candidate, encoded) in enumerate(self._read_encoded(candidates)):
                if encoded is None:
                    continue  # superseded or rejected: already released and counted
                rid = records.record_id(len(written) + 1)
                image_spec = prompts.spec_for_image(self._spec, self._rules, candidate.item.key)
                line = jsonl.batch_line(rid, image_spec, encoded)
                del encoded
                if self._remaining_s() < TIME_MARGIN_S:
                    decision = jsonl.Decision.JOB_FULL
                else:
                    decision = splitter.place(len(line))
                if decision == jsonl.Decision.JOB_FULL:
                    leftover = candidates[position:]
                    self._release_all(c.claim for c in leftover)
                    rest = [c.item for c in leftover]
                    break
                if decision == jsonl.Decision.NEW_FILE:
                    if sink is not None:
                        sink.close()
                    sink = self._files.open(records.input_file_key(name, len(splitter.files)))
                assert sink is not None
                sink.write(line)
                written.append(_Written(candidate, rid))
            if sink is not None:
                sink.close()
                sink = None
        finally:
            if sink is not None:
                sink.abort()
        result.files, result.bytes, result.records = len(splitter.files), splitter.job_bytes, len(written)
        return written, rest

    def _read_encoded(self, candidates: list[Candidate]) -> Iterator[tuple[Candidate, bytes | None]]:
        """Each candidate with its base64 text, read a few ahead in parallel (bounded memory)."""
        ahead = max(1, min(self._workers, 8))
        with ThreadPoolExecutor(max_workers=ahead) as pool:
            for start in range(0, len(candidates), ahead):
                chunk = candidates[start : start + ahead]
                yield from zip(chunk, pool.map(self._read_one, chunk), strict=True)

    def _read_one(self, candidate: Candidate) -> bytes | None:
        item = candidate.item
        try:
            body, info = self._store.get_bytes(keys.encoded_key(item.key))
        except ObjectMissing:
            self._claims.release(candidate.claim)
            return None
        if info.metadata.get(SOURCE_ETAG_META) != item.etag:
            self._claims.release(candidate.claim)
            return None
        try:
            decode_png(body)
        except Rejection as rejection:
            record = error_record(
                stage=CAPTION_STAGE,
                error_code=rejection.code.value,
                error_type=rejection.error_type,
                message=rejection.message,
                retryable=False,
                bucket=self._store.bucket,
                source_key=item.key,
                source_etag=item.etag,
                details={"mode": "batch"},
            )
            publish_error_record(self._store, record)
            self._claims.release(candidate.claim)
            return None
        return body

    # ------------------------------------------------------------------ 4. the job

    def _create(
        self, name: str, request: BackfillRequest, written: list[_Written], result: SubmitResult
    ) -> None:
        index = [
            records.IndexEntry(
                record_id=w.record_id,
                source_key=w.candidate.item.key,
                source_etag=w.candidate.item.etag,
                claim_etag=w.candidate.claim.etag,
                width=w.candidate.width,
                height=w.candidate.height,
                uploaded_at=w.candidate.uploaded_at,
                resize_policy=w.candidate.made[0],
                target_width=w.candidate.made[1],
                target_height=w.candidate.made[2],
            )
            for w in written
        ]
        sink = self._files.open(records.job_index_key(name))
        for line in records.write_index(index):
            sink.write(line)
        sink.close()
        document: dict[str, Any] = {
            "job_name": name,
            "job_arn": None,
            "status": "Preparing",
            "state": "preparing",
            "backfill_id": request.backfill_id,
            "part": request.part,
            "request_key": request.key,
            "prefix": request.prefix,
            "records": len(index),
            "files": result.files,
            "bytes": result.bytes,
            "model": _spec_document(self._spec),
            "prompt_rules": [asdict(rule) for rule in self._rules],
            "created_at": utc_now_iso(),
            "created_epoch": self._wall(),
        }
        doc_key = records.job_document_key(name)
        self._store.put_json(doc_key, document)
        bucket = self._store.bucket
        try:
            arn = self._jobs.create(
                job_name=name,
                role_arn=self._env.role_arn,
                model_id=self._spec.model_id,
                input_uri=f"s3://{bucket}/{records.input_prefix(name)}",
                output_uri=f"s3://{bucket}/{records.output_prefix(name)}",
                timeout_hours=self._limits.timeout_hours,
            )
        except Exception:
            logger.exception("CreateModelInvocationJob failed; claims released", extra={"job_name": name})
            self._release_all(w.candidate.claim for w in written)
            document.update({"status": "SubmitFailed", "state": "failed"})
            self._store.put_json(doc_key, document)
            raise
        document.update(
            {"job_arn": arn, "status": "Submitted", "state": "running", "submitted_at": utc_now_iso()}
        )
        self._store.put_json(doc_key, document)
        result.outcome, result.job_arn = Outcome.SUBMITTED, arn
        logger.info("batch job submitted", extra={"job_name": name, "job_arn": arn, "records": len(index)})

    # ------------------------------------------------------------------ fallbacks

    def _send_online(self, candidates: list[Candidate], result: SubmitResult) -> None:
        for candidate in candidates:
            self._claims.release(candidate.claim)
            item = candidate.item
            message = ImageMessage(
                bucket=self._store.bucket,
                source_key=item.key,
                source_etag=item.etag,
                encoded_key=keys.encoded_key(item.key),
                width=candidate.width,
                height=candidate.height,
                uploaded_at=candidate.uploaded_at,
                resize_policy=candidate.made[0],
                target_width=candidate.made[1],
                target_height=candidate.made[2],
            )
            self._queue.send(message.to_json())
            result.online += 1
        if candidates:
            result.outcome = Outcome.ONLINE
            logger.info(
                "fewer images than a batch job's minimum: sent to the online caption queue",
                extra={"images": len(candidates), "min_records": self._limits.min_records},
            )

    def _hand_on(self, request: BackfillRequest, rest: list[Item], result: SubmitResult) -> None:
        if not rest:
            return
        following = request.continued(rest)
        self._store.put_bytes(following.key, following.to_json(), "application/json")
        result.handed_on, result.next_request = len(rest), following.key

    def _release_all(self, claims: Any) -> None:
        for claim in claims:
            self._claims.release(claim)

    def _files_cleanup(self, name: str, result: SubmitResult) -> None:
        for number in range(1, result.files + 1):
            self._files.delete(records.input_file_key(name, number))
        result.files = result.bytes = result.records = 0


@dataclass(frozen=True, slots=True)
class _Written:
    candidate: Candidate
    record_id: str

    @property
    def item(self) -> Item:
        return self.candidate.item


def _spec_document(spec: ModelSpec) -> dict[str, Any]:
    return asdict(spec)


def model_from_document(document: dict[str, Any]) -> BatchModel:
    """The spec and folder rules the job was built with (the collector's records describe them)."""
    fields = {f.name for f in dataclass_fields(ModelSpec)}
    spec = ModelSpec(**{k: v for k, v in document["model"].items() if k in fields})
    rules = tuple(FolderPrompt(**rule) for rule in document.get("prompt_rules", []))
    return BatchModel(spec, rules)
