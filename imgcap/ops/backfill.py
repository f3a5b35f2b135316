"""``imgcap backfill --prefix P``: caption an archive with Bedrock batch inference, at batch prices.

Selection (read-only, from the bucket): every upload under ``images/P`` whose encoded object
exists for its current ETag and which has neither a caption nor a caption-stage error record for
that ETag. The command prints the count and the estimated cost at batch and at on-demand prices.
Without ``--dry-run`` it writes the selection as ``batch/requests/<id>-000.json``; that object's
creation starts the submit function in the stack, which builds the JSONL files from the encoded
objects, claims the images for the job's lifetime and creates the job (README "Backfills"). Fewer
images than a job's minimum go to the online caption queue instead, and the command says so.

``imgcap backfill --status`` lists the jobs (``batch/jobs/*.json``): state, Bedrock status,
records, how they ended, and the tokens at the batch price.
"""

from __future__ import annotations

import argparse
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from imgcap.ops.aws import EXIT_OK, OpsError, error_code
from imgcap.ops.bucket import list_objects, list_sources, map_concurrently, read_json
from imgcap.ops.context import OpsContext, usd
from imgcap.ops.upload import normalise_prefix
from lambdas.backfill import records
from lambdas.backfill.estimate import CostEstimate, estimate
from lambdas.backfill.requests import BackfillRequest, Item
from lambdas.shared import contract, keys
from lambdas.shared.records import ImageMessage
from lambdas.shared.storage import SOURCE_ETAG_META, STAGE_META

CAPTION_STAGE = "caption"
DESCRIPTION = (
    "Caption the images under images/P that have no caption (and no final error) for their current\n"
    "version with Amazon Bedrock batch inference: about half the on-demand price, outside the\n"
    "requests-per-minute quota, usually done within 24 hours. Prints the count and the estimated cost\n"
    "at batch and on-demand prices; --dry-run stops there. Fewer images than a job's minimum go to\n"
    "the online caption queue instead. --status lists the jobs and how their records ended."
)


@dataclass(frozen=True, slots=True)
class Found:
    width: int
    height: int
    uploaded_at: str
    made: tuple[str | None, int | None, int | None]  # resize policy, target width, height


@dataclass(slots=True)
class Selection:
    listed: int = 0
    selected: list[Item] = field(default_factory=list)
    found: dict[str, Found] = field(default_factory=dict)  # what the online fallback's message needs
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--prefix", metavar="P", help="images under images/P/ ('' with --all-images)")
    which.add_argument("--all-images", action="store_true", help="every image in the bucket")
    which.add_argument("--status", action="store_true", help="list backfill jobs and how their records ended")
    parser.add_argument("--dry-run", action="store_true", help="count and estimate only; start nothing")
    parser.add_argument("--max-images", type=int, default=None, metavar="N", help="at most N images")
    parser.add_argument("--concurrency", type=int, default=16, metavar="N", help="parallel reads (16)")


def check_arguments(args: argparse.Namespace) -> None:
    """The local checks, before any AWS call (exit 2)."""
    if args.status:
        return
    if not args.all_images and not normalise_prefix(args.prefix):
        raise OpsError("--prefix is empty: pass --all-images to backfill every image in the bucket")
    if args.max_images is not None and args.max_images < 1:
        raise OpsError("--max-images must be at least 1")


def command(ctx: OpsContext, args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """(exit code, the --json object's fields); human lines go to ``ctx.out``."""
    check_arguments(args)
    if args.status:
        return EXIT_OK, {"jobs": status(ctx)}
    prefix = "" if args.all_images else normalise_prefix(args.prefix)
    report = run(
        ctx,
        prefix=prefix,
        dry_run=args.dry_run,
        max_images=args.max_images,
        concurrency=args.concurrency,
    )
    return EXIT_OK, report


# --------------------------------------------------------------------------- selection


def select(s3: Any, bucket: str, prefix: str, *, max_images: int | None, concurrency: int) -> Selection:
    rel = f"{prefix}/" if prefix else ""
    images = list_sources(s3, bucket, keys.IMAGES_PREFIX + rel)
    captions = {o.key for o in list_objects(s3, bucket, keys.CAPTIONS_PREFIX + rel)}
    errors = {o.key for o in list_objects(s3, bucket, keys.ERRORS_PREFIX + rel)}
    selection = Selection(listed=len(images))

    def check(image: Any) -> str | Found:
        for record_key, is_final in (
            (keys.caption_key(image.key), lambda m: True),
            (keys.error_key(image.key), lambda m: m.get(STAGE_META) == CAPTION_STAGE),
        ):
            if record_key in captions or record_key in errors:
                meta = _head_metadata(s3, bucket, record_key)
                if meta is not None and meta.get(SOURCE_ETAG_META) == image.etag and is_final(meta):
                    return "captioned" if record_key.startswith(keys.CAPTIONS_PREFIX) else "final_error"
        meta = _head_metadata(s3, bucket, keys.encoded_key(image.key))
        if meta is None:
            return "not_encoded"
        if meta.get(SOURCE_ETAG_META) != image.etag:
            return "encoded_for_another_version"
        uploaded = image.last_modified
        stamp = (
            uploaded.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if uploaded else ""
        )
        width, height = int(meta.get("source-width", "0") or 0), int(meta.get("source-height", "0") or 0)
        return Found(width, height, stamp, records.made_of(meta))

    for image, outcome in map_concurrently(check, images, concurrency):
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, str):
            selection.skip(outcome)
        elif max_images is not None and len(selection.selected) >= max_images:
            selection.skip("over_max_images")
        else:
            selection.selected.append(Item(image.key, image.etag))
            selection.found[image.key] = outcome
    return selection


def _head_metadata(s3: Any, bucket: str, key: str) -> dict[str, str] | None:
    try:
        return dict(s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}))
    except ClientError as exc:
        if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise


# --------------------------------------------------------------------------- settings read back


def read_limits(ctx: OpsContext) -> tuple[contract.BatchLimits, bool]:
    """The deployed limits (SSM ``/<stack>/batch-limits``), else the contract's defaults (False)."""
    name = f"{ctx.stack.ssm_prefix}/{contract.SSM_BATCH_LIMITS_PARAM}"
    try:
        value = ctx.clients.ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except ClientError as exc:
        if error_code(exc) == "ParameterNotFound":
            return contract.BatchLimits(), False
        raise
    return contract.parse_batch_limits(json.loads(value), label=f"SSM {name}:"), True


def read_model(ctx: OpsContext) -> tuple[str, int, str]:
    """(prompt, max-tokens, model id) as deployed, for the estimate; the contract's defaults when absent."""
    names = {f"{ctx.stack.ssm_prefix}/{n}": n for n in ("prompt", "max-tokens", "model-id")}
    found = {
        names[p["Name"]]: p["Value"] for p in ctx.clients.ssm.get_parameters(Names=list(names))["Parameters"]
    }
    prompt = found.get("prompt") or contract.SSM_DEFAULTS["prompt"]
    max_tokens = int(found.get("max-tokens") or contract.SSM_DEFAULTS["max-tokens"])
    return prompt, max_tokens, found.get("model-id") or contract.SSM_DEFAULTS["model-id"]


# --------------------------------------------------------------------------- the command


def run(
    ctx: OpsContext,
    *,
    prefix: str,
    dry_run: bool,
    max_images: int | None = None,
    concurrency: int = 16,
) -> dict[str, Any]:
    """Select, estimate, and (unless a dry run) start; returns the --json fields, prints lines."""
    s3, bucket = ctx.clients.s3, ctx.stack.bucket
    limits, deployed = read_limits(ctx)
    prompt, max_tokens, model_id = read_model(ctx)
    selection = select(s3, bucket, prefix, max_images=max_images, concurrency=concurrency)
    cost = estimate(len(selection.selected), prompt, max_tokens, model_id)
    where = f"s3://{bucket}/{keys.IMAGES_PREFIX}{prefix + '/' if prefix else ''}"
    report: dict[str, Any] = {
        "where": where,
        "listed": selection.listed,
        "selected": len(selection.selected),
        "skipped": selection.skipped,
        "estimate": _cost_dict(cost),
        "min_records": limits.min_records,
        "limits_deployed": deployed,
        "mode": "dry_run",
    }
    count = len(selection.selected)
    lines = [
        f"{count} image(s) under {where} need a caption ({selection.listed} listed; skipped: "
        + (", ".join(f"{k} {v}" for k, v in sorted(selection.skipped.items())) or "none")
        + ")",
        f"estimated cost: {usd(cost.batch_usd)} at batch prices, {usd(cost.on_demand_usd)} on demand "
        f"(saves {usd(cost.saving_usd)}; {cost.input_tokens:,} input + up to {cost.output_tokens:,} "
        "output tokens)",
    ]
    if not deployed:
        lines.append(f"note: no {contract.SSM_BATCH_LIMITS_PARAM} parameter in SSM; using the default limits")
    if count == 0:
        report["mode"] = "nothing"
        lines.append("nothing to backfill")
    elif dry_run:
        lines.append(
            "dry run: nothing started"
            + (
                f" (fewer than the job minimum of {limits.min_records}: would go to the online queue)"
                if count < limits.min_records
                else ""
            )
        )
    elif count < limits.min_records:
        sent = _send_online(ctx, selection)
        report.update({"mode": "online", "sent": sent})
        lines.append(
            f"{sent} image(s) is fewer than a batch job's minimum of {limits.min_records} records: sent "
            "to the online caption queue instead (on-demand prices). Watch with `imgcap status`."
        )
    else:
        backfill_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(3)
        request = BackfillRequest(
            backfill_id, 0, tuple(selection.selected), datetime.now(UTC).isoformat(timespec="seconds"), prefix
        )
        s3.put_object(Bucket=bucket, Key=request.key, Body=request.to_json(), ContentType="application/json")
        jobs = -(-count // limits.max_records_per_job)
        report.update({"mode": "batch", "backfill_id": backfill_id, "request_key": request.key})
        lines.append(
            f"backfill {backfill_id} started: s3://{bucket}/{request.key} (at least {jobs} batch job(s); "
            "jobs usually finish within 24 hours). Watch with `imgcap backfill --status`."
        )
    for line in lines:
        ctx.say(line)
    return report


def _send_online(ctx: OpsContext, selection: Selection) -> int:
    queue_url = ctx.stack.require_queue()
    sent = 0
    for item in selection.selected:
        found = selection.found[item.key]
        message = ImageMessage(
            bucket=ctx.stack.bucket,
            source_key=item.key,
            source_etag=item.etag,
            encoded_key=keys.encoded_key(item.key),
            width=found.width,
            height=found.height,
            uploaded_at=found.uploaded_at or datetime.now(UTC).isoformat(timespec="seconds"),
            resize_policy=found.made[0],
            target_width=found.made[1],
            target_height=found.made[2],
        )
        ctx.clients.sqs.send_message(QueueUrl=queue_url, MessageBody=message.to_json())
        sent += 1
    return sent


def _cost_dict(cost: CostEstimate) -> dict[str, Any]:
    return {
        "images": cost.images,
        "input_tokens": cost.input_tokens,
        "output_tokens_max": cost.output_tokens,
        "batch_usd": round(cost.batch_usd, 6),
        "on_demand_usd": round(cost.on_demand_usd, 6),
    }


# --------------------------------------------------------------------------- status


def job_documents(s3: Any, bucket: str) -> list[dict[str, Any]]:
    documents = []
    for obj in list_objects(s3, bucket, contract.BATCH_JOBS_PREFIX):
        if records.is_job_document_key(obj.key):
            documents.append(read_json(s3, bucket, obj.key))
    return sorted(documents, key=lambda d: str(d.get("created_at", "")), reverse=True)


def job_rows(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """One row per job (newest first): state, Bedrock status, records, how they ended, the tokens
    at the batch price. ``imgcap backfill --status`` prints them; ``imgcap status`` shows the
    running and most recent ones."""
    documents = job_documents(s3, bucket)
    rows = []
    for doc in documents:
        usage = doc.get("usage") or {}
        model_id = str((doc.get("model") or {}).get("model_id") or contract.SSM_DEFAULTS["model-id"])
        tokens_in, tokens_out = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
        batch_usd = contract.model_cost_usd(model_id, tokens_in, tokens_out, batch=True)
        if batch_usd is None:
            batch_usd = contract.estimate_cost_usd(
                tokens_in,
                tokens_out,
                contract.NOVA_PRO_BATCH_INPUT_PRICE_PER_1K,
                contract.NOVA_PRO_BATCH_OUTPUT_PRICE_PER_1K,
            )
        rows.append(
            {
                "job_name": doc.get("job_name"),
                "state": doc.get("state"),
                "status": doc.get("status"),
                "records": doc.get("records", 0),
                "counts": doc.get("counts", {}),
                "created_at": doc.get("created_at"),
                "batch_usd": round(batch_usd, 6),
            }
        )
    return rows


NOT_COLLECTED = frozenset({"running", "collecting", "preparing"})


def job_line(row: dict[str, Any]) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(row["counts"].items())) or "-"
    return (
        f"  {row['job_name']}  {row['state']:<10} {row['status'] or '-':<18} "
        f"{row['records']:>6} records  {counts}  {usd(row['batch_usd'])} at batch prices  "
        f"(created {row['created_at']})"
    )


def status(ctx: OpsContext) -> list[dict[str, Any]]:
    """One row per job (newest first), also printed as lines."""
    rows = job_rows(ctx.clients.s3, ctx.stack.bucket)
    if not rows:
        ctx.say("no backfill jobs")
        return rows
    running = sum(1 for r in rows if r["state"] in NOT_COLLECTED)
    ctx.say(f"{len(rows)} backfill job(s), {running} not yet collected")
    for row in rows:
        ctx.say(job_line(row))
    return rows
