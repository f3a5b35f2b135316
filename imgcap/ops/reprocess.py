"""``imgcap reprocess --prefix P``: caption the images under ``images/P`` again.

For each image: delete its caption and error records (and the claim that made the last model
call happen once, so the new call is not taken for a duplicate), then copy the object onto itself
with a metadata change (``CopyObject`` with ``MetadataDirective=REPLACE``). That copy is a new
``s3:ObjectCreated:Copy`` event, so the normal pipeline runs: resize (or, when the encoded image
for this ETag is still there, just a new message) and then one paid Bedrock call per image.
``--reencode`` also deletes the base64 object, for after a ``target-size`` or ``resize-policy``
change. The image's bytes, content type and user metadata are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imgcap.ops.bucket import ObjectSummary, list_sources, map_concurrently
from imgcap.ops.context import OpsContext, usd
from imgcap.ops.upload import normalise_prefix
from imgcap.progress import Progress
from lambdas.shared import contract, keys
from lambdas.shared.records import utc_now_iso

REPROCESS_METADATA = "reprocess-requested-at"
# A typical Nova Pro call for one 1280x720 image with the default prompt and maxTokens (README).
TYPICAL_INPUT_TOKENS = contract.IMAGE_INPUT_TOKENS_ESTIMATE  # plus the prompt: see estimate_input_tokens
TYPICAL_OUTPUT_TOKENS = 300

# System headers a REPLACE copy would otherwise reset: carried over from the original.
_COPY_KEEP = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage")


@dataclass(slots=True)
class ReprocessResult:
    selected: list[str] = field(default_factory=list)
    triggered: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    declined: bool = False  # the operator said no at the prompt: nothing was changed


# (number of images, where, estimated cost) -> go ahead?
Confirm = Callable[[int, str, str], bool]


def records_to_delete(source_key: str, etag: str, *, reencode: bool) -> list[str]:
    doomed = [keys.caption_key(source_key), keys.error_key(source_key), keys.claim_key(source_key, etag)]
    if reencode:
        doomed.append(keys.encoded_key(source_key))
    return doomed


def retrigger(s3: Any, bucket: str, image: ObjectSummary, *, reencode: bool, stamp: str) -> None:
    head = s3.head_object(Bucket=bucket, Key=image.key)
    etag = str(head.get("ETag", image.etag)).strip('"')
    for key in records_to_delete(image.key, etag, reencode=reencode):
        s3.delete_object(Bucket=bucket, Key=key)  # deleting a missing key is not an error in S3
    metadata = dict(head.get("Metadata", {}))
    metadata[REPROCESS_METADATA] = stamp
    extra = {name: head[name] for name in _COPY_KEEP if head.get(name)}
    s3.copy_object(
        Bucket=bucket,
        Key=image.key,
        CopySource={"Bucket": bucket, "Key": image.key},
        MetadataDirective="REPLACE",
        Metadata=metadata,
        **extra,
    )


def deployed_model(ctx: OpsContext) -> tuple[str, str]:
    """(model-id, service-tier) from the stack's SSM parameters; the contract defaults if unreadable."""
    names = {f"{ctx.stack.ssm_prefix}/{n}": n for n in ("model-id", "service-tier")}
    values = dict(contract.SSM_DEFAULTS)
    try:
        found = ctx.clients.ssm.get_parameters(Names=list(names)).get("Parameters", [])
        values.update({names[p["Name"]]: str(p["Value"]) for p in found if p.get("Name") in names})
    except Exception as exc:  # an estimate: fall back to the defaults rather than fail
        ctx.warn(f"cannot read the deployed model-id/service-tier ({exc}); estimating for the defaults")
    return values["model-id"], values["service-tier"]


def run(
    ctx: OpsContext,
    *,
    prefix: str | None,
    dry_run: bool = False,
    reencode: bool = False,
    concurrency: int = 8,
    confirm: Confirm | None = None,
) -> ReprocessResult:
    clean = normalise_prefix(prefix)
    listing_prefix = keys.IMAGES_PREFIX + (f"{clean}/" if clean else "")
    s3, bucket = ctx.clients.s3, ctx.stack.bucket
    images = list_sources(s3, bucket, listing_prefix)
    result = ReprocessResult(selected=[o.key for o in images])
    model_id, tier = deployed_model(ctx)
    cost = contract.model_cost_usd(
        model_id, TYPICAL_INPUT_TOKENS * len(images), TYPICAL_OUTPUT_TOKENS * len(images), service_tier=tier
    )
    where = f"s3://{bucket}/{listing_prefix}"
    if not images:
        ctx.say(f"nothing to reprocess: no images under {where}")
        return result
    if dry_run:
        for key in result.selected:
            ctx.say(f"would reprocess {key}")
        ctx.say(
            f"dry run: {len(images)} image(s) under {where} would be captioned again: "
            f"{len(images)} paid model call(s), about "
            + (f"{usd(cost)} at {model_id} {tier}-tier list prices" if cost is not None else "?")
            + " (nothing changed)"
        )
        return result

    if confirm is not None and not confirm(len(images), where, usd(cost) if cost is not None else "?"):
        result.declined = True
        ctx.say(f"nothing changed: reprocessing {len(images)} image(s) under {where} was not confirmed")
        return result

    stamp = utc_now_iso()
    with Progress("reprocess", total=len(images), stream=ctx.err, unit="img") as progress:
        for image, outcome in map_concurrently(
            lambda o: retrigger(s3, bucket, o, reencode=reencode, stamp=stamp),
            images,
            concurrency,
            on_done=lambda _o, r: progress.advance(
                outcome="failed" if isinstance(r, Exception) else "queued"
            ),
        ):
            if isinstance(outcome, Exception):
                result.failures.append((image.key, f"{type(outcome).__name__}: {outcome}"))
            else:
                result.triggered += 1
    for key, reason in result.failures:
        ctx.err.write(f"imgcap reprocess: failed: {key}: {reason}\n")
    ctx.say(
        f"re-triggered {result.triggered} image(s) under {where} "
        f"({result.triggered} paid model call(s), about "
        f"{usd((cost or 0.0) * result.triggered / len(images))}); failed {len(result.failures)}. "
        "Watch progress with `imgcap status`."
    )
    return result
