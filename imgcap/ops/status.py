"""``imgcap status``: where the pipeline stands, from the bucket and the queues.

- objects (and bytes) per prefix: images/, base64_images/, captions/, errors/;
- caption queue depth (visible / in flight / delayed), DLQ depth and the resize failure queue's;
- images still pending (no caption and no error record yet) and captions of an older upload;
- the newest N error records, counted by error code;
- tokens used (the ``usage`` of every caption record) and the estimated model cost.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from imgcap.ops.bucket import (
    PIPELINE_PREFIXES,
    ObjectSummary,
    RecordUnreadable,
    as_dict,
    list_objects,
    read_json,
    read_records,
    source_key_of,
)
from imgcap.ops.context import OpsContext, human_bytes, usd
from imgcap.progress import Progress
from lambdas.shared import contract, keys

# The contract's Nova Pro list prices: the fallback for a model the price table lacks, and the
# default of the flags. Without flags each caption is priced at its own model and service tier.
INPUT_PRICE_PER_1K = contract.NOVA_PRO_INPUT_PRICE_PER_1K
OUTPUT_PRICE_PER_1K = contract.NOVA_PRO_OUTPUT_PRICE_PER_1K

_MESSAGE_CHARS = 120
_PROGRESS_FROM = 200  # reading fewer captions than this is quick: no progress lines


@dataclass(frozen=True, slots=True)
class PrefixCount:
    objects: int
    bytes: int


@dataclass(frozen=True, slots=True)
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int = 0

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


@dataclass(frozen=True, slots=True)
class RecentError:
    source_key: str
    error_code: str
    stage: str
    message: str
    occurred_at: str


@dataclass(slots=True)
class Usage:
    captions_read: int = 0
    unreadable: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    by_model: dict[str, int] = field(default_factory=dict)
    estimated_cost_usd: float = 0.0
    truncated: int = 0  # captions that stopped at maxTokens


@dataclass(slots=True)
class Status:
    stack: str
    bucket: str
    region: str | None
    prefixes: dict[str, PrefixCount]
    pending: int
    pending_examples: list[str]
    stale_captions: int
    caption_queue: QueueDepth | None
    dead_letter_queue: QueueDepth | None
    errors_total: int
    recent_errors_by_code: dict[str, int]
    recent_errors: list[RecentError]
    usage: Usage | None
    prices_per_1k: dict[str, float]
    dashboard: str | None
    generated_at: str
    configuration_fault: dict[str, Any] | None = None  # health/caption.json, when recent
    search_index: dict[str, Any] | None = None  # imgcap.ops.search.IndexStatus (None: search off)
    attention: list[str] = field(default_factory=list)  # plain sentences for the operator
    resize_failure_queue: QueueDepth | None = None  # uploads the resize function gave up on
    price_basis: str = "model"  # "model": each record's model and tier (contract.MODEL_PRICES); "flat"
    capacity_shortfall: dict[str, Any] | None = None  # health/capacity.json, when recent (issue 13)
    cost_per_1000_captions: dict[str, Any] | None = None  # Bedrock (records) + Lambda (CloudWatch)
    backfill_jobs: list[dict[str, Any]] = field(default_factory=list)  # running + the newest (issue 16)


def queue_depth(sqs: Any, queue_url: str) -> QueueDepth:
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return QueueDepth(
        visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


def estimate_cost(input_tokens: int, output_tokens: int, input_price: float, output_price: float) -> float:
    return contract.estimate_cost_usd(input_tokens, output_tokens, input_price, output_price)


def summarise_usage(
    captions: dict[str, dict[str, Any]],
    unreadable: int,
    input_price: float | None = None,
    output_price: float | None = None,
) -> Usage:
    """Token totals and the estimated cost: flat prices when given, else each record's model and tier."""
    usage = Usage(captions_read=len(captions), unreadable=unreadable)
    by_model: Counter[str] = Counter()
    flat = input_price is not None or output_price is not None
    in_price = INPUT_PRICE_PER_1K if input_price is None else input_price
    out_price = OUTPUT_PRICE_PER_1K if output_price is None else output_price
    cost = 0.0
    for record in captions.values():
        tokens = as_dict(record.get("usage"))
        in_tokens, out_tokens = _int(tokens.get("input_tokens")), _int(tokens.get("output_tokens"))
        usage.input_tokens += in_tokens
        usage.output_tokens += out_tokens
        priced = None if flat else contract.record_cost_usd(record)
        cost += priced if priced is not None else estimate_cost(in_tokens, out_tokens, in_price, out_price)
        by_model[str(record.get("model_id") or "unknown")] += 1
        usage.truncated += 1 if record.get("truncated") is True else 0
    usage.by_model = dict(sorted(by_model.items()))
    usage.estimated_cost_usd = round(cost, 6)
    return usage


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _newest(objects: list[ObjectSummary], n: int) -> list[ObjectSummary]:
    epoch = datetime.min.replace(tzinfo=UTC)
    return sorted(objects, key=lambda o: (o.last_modified or epoch, o.key), reverse=True)[:n]


def collect(
    ctx: OpsContext,
    *,
    recent: int = 20,
    read_usage: bool = True,
    input_price: float | None = None,
    output_price: float | None = None,
    concurrency: int = 16,
) -> Status:
    s3, bucket = ctx.clients.s3, ctx.stack.bucket
    listings = {prefix: list_objects(s3, bucket, prefix) for prefix in PIPELINE_PREFIXES}
    images = [o for o in listings[keys.IMAGES_PREFIX] if not keys.is_folder_marker(o.key)]
    listings[keys.IMAGES_PREFIX] = images
    prefixes = {p: PrefixCount(len(objs), sum(o.size for o in objs)) for p, objs in listings.items()}

    caption_keys = {o.key for o in listings[keys.CAPTIONS_PREFIX]}
    error_objects = listings[keys.ERRORS_PREFIX]
    error_keys = {o.key for o in error_objects}
    pending = [
        o.key
        for o in images
        if keys.caption_key(o.key) not in caption_keys and keys.error_key(o.key) not in error_keys
    ]

    usage: Usage | None = None
    stale = 0
    if read_usage and caption_keys:
        show = len(caption_keys) >= _PROGRESS_FROM
        with Progress("reading captions", len(caption_keys), stream=ctx.err, enabled=show) as progress:
            captions, failures = read_records(
                s3, bucket, sorted(caption_keys), concurrency, on_done=lambda _k, _r: progress.advance()
            )
        usage = summarise_usage(captions, len(failures), input_price, output_price)
        current = {o.key: o.etag for o in images}
        for record_key, record in captions.items():
            source = source_key_of(record, record_key, keys.CAPTIONS_PREFIX, keys.CAPTION_SUFFIX)
            etag = (
                (record.get("source") or {}).get("etag") if isinstance(record.get("source"), dict) else None
            )
            if source in current and etag and str(etag).strip('"') != current[source]:
                stale += 1
    elif read_usage:
        usage = summarise_usage({}, 0, input_price, output_price)

    newest = _newest(error_objects, recent)
    documents, _ = read_records(s3, bucket, [o.key for o in newest], concurrency)
    recent_errors: list[RecentError] = []
    for o in newest:
        doc = documents.get(o.key)
        if doc is None:
            recent_errors.append(RecentError(o.key, "unreadable", "", "the error record is not JSON", ""))
            continue
        message = " ".join(str(doc.get("message", "")).split())
        recent_errors.append(
            RecentError(
                source_key=source_key_of(doc, o.key, keys.ERRORS_PREFIX, keys.ERROR_SUFFIX),
                error_code=str(doc.get("error_code") or "unknown"),
                stage=str(doc.get("stage") or ""),
                message=message[:_MESSAGE_CHARS] + ("..." if len(message) > _MESSAGE_CHARS else ""),
                occurred_at=str(doc.get("occurred_at") or ""),
            )
        )
    by_code = Counter(e.error_code for e in recent_errors)

    stack = ctx.stack
    status = Status(
        stack=stack.name,
        bucket=bucket,
        region=stack.region,
        prefixes=prefixes,
        pending=len(pending),
        pending_examples=pending[:5],
        stale_captions=stale,
        caption_queue=queue_depth(ctx.clients.sqs, stack.queue_url) if stack.queue_url else None,
        dead_letter_queue=queue_depth(ctx.clients.sqs, stack.dlq_url) if stack.dlq_url else None,
        errors_total=len(error_objects),
        recent_errors_by_code=dict(by_code.most_common()),
        recent_errors=recent_errors,
        usage=usage,
        prices_per_1k={
            "input": INPUT_PRICE_PER_1K if input_price is None else input_price,
            "output": OUTPUT_PRICE_PER_1K if output_price is None else output_price,
        },
        price_basis="model" if input_price is None and output_price is None else "flat",
        dashboard=stack.dashboard_name,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        configuration_fault=read_configuration_fault(s3, bucket, datetime.now(UTC).timestamp()),
        resize_failure_queue=(
            queue_depth(ctx.clients.sqs, stack.resize_failure_queue_url)
            if stack.resize_failure_queue_url
            else None
        ),
    )
    from imgcap.ops.search import index_status  # issue 17: index lag

    index = index_status(ctx)
    status.search_index = None if index is None else index.as_dict()
    status.capacity_shortfall = read_capacity_shortfall(s3, bucket, datetime.now(UTC).timestamp())
    status.cost_per_1000_captions = cost_per_1000(ctx, usage)
    status.backfill_jobs = backfill_jobs(s3, bucket)
    status.attention = attention_sentences(status)
    return status


RECENT_JOBS = 5


def backfill_jobs(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """Every backfill job not collected yet, then the newest collected ones (``RECENT_JOBS``)."""
    from imgcap.ops.backfill import NOT_COLLECTED, job_rows

    rows = job_rows(s3, bucket)
    running = [r for r in rows if r["state"] in NOT_COLLECTED]
    done = [r for r in rows if r["state"] not in NOT_COLLECTED][:RECENT_JOBS]
    return running + done


# A shortfall noted in the last 15 minutes is current: workers note one at most once a minute.
CAPACITY_RECENT_S = 900
LAMBDA_COST_WINDOW_H = 24


def read_capacity_shortfall(s3: Any, bucket: str, now_epoch: float) -> dict[str, Any] | None:
    """The caption fleet's latest 'too small for the quota' note, if it is recent."""
    return _recent_health(s3, bucket, keys.CAPACITY_HEALTH_KEY, now_epoch, CAPACITY_RECENT_S)


def lambda_figures(ctx: OpsContext, hours: int = LAMBDA_COST_WINDOW_H) -> dict[str, float] | None:
    """GB-seconds and requests of the stack's functions over the last ``hours`` (CloudWatch's
    AWS/Lambda Duration and Invocations, memory from the function configuration); None when the
    stack's function names or those metrics are not available (the local runtime has neither)."""
    names = ctx.stack.function_names
    if not names:
        return None
    end = datetime.now(UTC)
    start = end - timedelta(hours=hours)

    def total(cloudwatch: Any, namespace: str, metric: str, dimension: tuple[str, str]) -> float:
        points = cloudwatch.get_metric_statistics(
            Namespace=namespace,
            MetricName=metric,
            Dimensions=[{"Name": dimension[0], "Value": dimension[1]}],
            StartTime=start,
            EndTime=end,
            Period=3600,
            Statistics=["Sum"],
        )["Datapoints"]
        return sum(float(p["Sum"]) for p in points)

    gb_seconds = requests = 0.0
    try:
        cloudwatch, lambda_ = ctx.clients.client("cloudwatch"), ctx.clients.client("lambda")
        for name in names:
            memory_mb = float(lambda_.get_function_configuration(FunctionName=name)["MemorySize"])
            duration_ms = total(cloudwatch, "AWS/Lambda", "Duration", ("FunctionName", name))
            gb_seconds += duration_ms / 1000 * memory_mb / 1024
            requests += total(cloudwatch, "AWS/Lambda", "Invocations", ("FunctionName", name))
        captions = total(
            cloudwatch, contract.METRICS_NAMESPACE, contract.Metric.CAPTIONS_WRITTEN, ("service", "caption")
        )
    except Exception:  # no access or no such metric: the Bedrock figure still stands
        return None
    return {"gb_seconds": gb_seconds, "requests": requests, "captions": captions}


def cost_per_1000(ctx: OpsContext, usage: Usage | None) -> dict[str, Any] | None:
    """Per 1,000 captions: the records' tokens at their model's price, plus Lambda when measured."""
    if usage is None or usage.captions_read == 0:
        return None
    per_caption = 1000 / usage.captions_read
    bedrock = round(usage.estimated_cost_usd * per_caption, 4)
    out: dict[str, Any] = {"bedrock_usd": bedrock, "lambda_usd": None, "total_usd": None, "basis": ""}
    figures = lambda_figures(ctx)
    if figures is None or figures["captions"] <= 0:
        out["basis"] = "Bedrock from the caption records; Lambda not measured (no CloudWatch figures)"
        return out
    # Lambda: the last day's GB-seconds and requests of both functions over the captions written
    # in that day (the CaptionsWritten metric), so retries and rejected uploads are in the price.
    compute = contract.lambda_cost_usd(figures["gb_seconds"], figures["requests"])
    compute *= 1000 / figures["captions"]
    out.update(
        lambda_usd=round(compute, 4),
        total_usd=round(bedrock + compute, 4),
        lambda_gb_seconds=round(figures["gb_seconds"], 1),
        basis=(
            f"Bedrock from the caption records; Lambda from the last {LAMBDA_COST_WINDOW_H} h of CloudWatch"
        ),
    )
    return out


# A configuration fault older than this is history, not news (the alarm has the full record).
CONFIGURATION_FAULT_RECENT_S = 3600


def read_configuration_fault(s3: Any, bucket: str, now_epoch: float) -> dict[str, Any] | None:
    """The caption stage's latest configuration fault, if it happened in the last hour."""
    return _recent_health(s3, bucket, keys.CAPTION_HEALTH_KEY, now_epoch, CONFIGURATION_FAULT_RECENT_S)


def _recent_health(
    s3: Any, bucket: str, key: str, now_epoch: float, max_age_s: float
) -> dict[str, Any] | None:
    """A ``health/`` document, when one exists and its ``epoch`` is at most ``max_age_s`` old."""
    try:
        document = read_json(s3, bucket, key)
    except RecordUnreadable:  # none written yet (or not JSON): nothing to report
        return None
    epoch = document.get("epoch")
    if not isinstance(epoch, int | float) or now_epoch - float(epoch) > max_age_s:
        return None
    return document


def attention_sentences(status: Status) -> list[str]:
    """What an operator should do now, one plain sentence each."""
    out: list[str] = []
    fault = status.configuration_fault
    if fault:
        waiting = sum(q.total for q in (status.caption_queue, status.dead_letter_queue) if q is not None)
        out.append(
            f"Bedrock refused caption calls for a configuration reason at {fault.get('occurred_at')} "
            f"({fault.get('error_type')}: {fault.get('message')}) for model {fault.get('model_id')}; "
            f"{waiting} message(s) wait in the queues and nothing was written off: enable model access "
            "or fix the SSM model-id, then run `imgcap redrive`."
        )
    shortfall = status.capacity_shortfall
    if shortfall and shortfall.get("message"):
        out.append(
            f"The caption fleet is too small for the quota (noted {shortfall.get('occurred_at')}): "
            f"{shortfall['message']}."
        )
    if status.usage is not None and status.usage.truncated:
        out.append(
            f'{status.usage.truncated} caption(s) stopped at maxTokens ("truncated": true): raise the SSM '
            "max-tokens parameter and `imgcap reprocess` them if you need complete descriptions."
        )
    return out


def _index_line(index: dict[str, Any]) -> str:
    from imgcap.ops.search import IndexStatus

    return IndexStatus(**index).line()


def as_json(status: Status) -> str:
    return json.dumps(asdict(status), indent=2, ensure_ascii=False, sort_keys=False)


def _queue_line(name: str, depth: QueueDepth | None) -> str:
    if depth is None:
        return f"  {name:<18} (unknown: no URL for it)"
    extra = f", {depth.delayed} delayed" if depth.delayed else ""
    return f"  {name:<18} {depth.visible} waiting, {depth.in_flight} in flight{extra}"


def _usage_lines(status: Status) -> list[str]:
    if status.usage is None:
        return []
    lines: list[str] = []
    u = status.usage
    prices = status.prices_per_1k
    lines.append(
        f"tokens: {u.input_tokens:,} input + {u.output_tokens:,} output over {u.captions_read} caption(s)"
        + (f" ({u.unreadable} unreadable)" if u.unreadable else "")
    )
    basis = (
        f"at ${prices['input']}/1K input, ${prices['output']}/1K output tokens"
        if status.price_basis == "flat"
        else "at each caption's model and service-tier list price"
    )
    lines.append(f"estimated model cost: {usd(u.estimated_cost_usd)} ({basis})")
    cost = status.cost_per_1000_captions
    if cost:
        lambda_part = f" + Lambda {usd(cost['lambda_usd'])}" if cost.get("lambda_usd") is not None else ""
        lines.append(f"per 1,000 captions: Bedrock {usd(cost['bedrock_usd'])}{lambda_part} ({cost['basis']})")
    if u.by_model:
        lines.append("  by model: " + ", ".join(f"{m} {n}" for m, n in u.by_model.items()))
    return lines


def _backfill_lines(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    from imgcap.ops.backfill import NOT_COLLECTED, job_line

    running = sum(1 for r in rows if r["state"] in NOT_COLLECTED)
    head = f"backfill jobs: {running} running, then the newest collected (`imgcap backfill --status`):"
    return [head, *(job_line(row) for row in rows)]


def as_text(status: Status) -> str:
    lines = [f"stack {status.stack}  bucket {status.bucket}  region {status.region or '-'}", "objects:"]
    for prefix, count in status.prefixes.items():
        lines.append(f"  {prefix:<18} {count.objects:>8}  {human_bytes(count.bytes):>10}")
    pending_line = f"pending: {status.pending} image(s) without a caption or error record"
    if status.pending_examples:
        pending_line += " (e.g. " + ", ".join(status.pending_examples[:3]) + ")"
    lines.append(pending_line)
    if status.stale_captions:
        lines.append(f"stale: {status.stale_captions} caption(s) describe an older upload of their image")
    lines.append("queues:")
    lines.append(_queue_line("caption queue", status.caption_queue))
    lines.append(_queue_line("dead-letter queue", status.dead_letter_queue))
    if status.dead_letter_queue and status.dead_letter_queue.visible:
        lines.append("  -> messages in the DLQ: inspect them with `imgcap dlq`, then `imgcap redrive`")
    lines.append(_queue_line("resize failures", status.resize_failure_queue))
    if status.resize_failure_queue and status.resize_failure_queue.total:
        lines.append("  -> uploads the resize function gave up on: re-upload them or `imgcap reprocess`")
    shown = len(status.recent_errors)
    lines.append(f"errors: {status.errors_total} record(s); newest {shown} by code:")
    for code, n in status.recent_errors_by_code.items():
        lines.append(f"  {code:<22} {n}")
    for e in status.recent_errors[:5]:
        lines.append(f"  {e.occurred_at or '-'}  {e.error_code}  {e.source_key}: {e.message}")
    lines.extend(_usage_lines(status))
    lines.extend(_backfill_lines(status.backfill_jobs))
    if status.search_index is not None:
        lines.append(_index_line(status.search_index))
    if status.dashboard:
        lines.append(f"dashboard: {status.dashboard}")
    lines.extend(f"attention: {sentence}" for sentence in status.attention)
    return "\n".join(lines)


def run(
    ctx: OpsContext,
    *,
    as_json_output: bool = False,
    recent: int = 20,
    read_usage: bool = True,
    input_price: float | None = None,
    output_price: float | None = None,
    concurrency: int = 16,
) -> Status:
    status = collect(
        ctx,
        recent=recent,
        read_usage=read_usage,
        input_price=input_price,
        output_price=output_price,
        concurrency=concurrency,
    )
    ctx.say(as_json(status) if as_json_output else as_text(status))
    return status
