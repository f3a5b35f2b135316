"""The operator subcommands: ``upload``, ``status``, ``report``, ``redrive``, ``reprocess``, ``export``.

Each one resolves the stack by name first (SSM ``/<stack-name>/...``, CloudFormation outputs) and
turns every AWS failure it can explain (wrong stack name, missing or expired credentials, access
denied) into one line on stderr and exit code 2; no tracebacks for an operator to decode.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgcap.ops.aws import EXIT_FAILED, EXIT_OK, AwsClients, OpsError, explain
from imgcap.ops.context import OpsContext
from imgcap.ops.stack import resolve_stack
from imgcap.ops.status import INPUT_PRICE_PER_1K, OUTPUT_PRICE_PER_1K
from lambdas.shared.contract import DEFAULT_STACK_NAME

Body = Callable[[OpsContext, argparse.Namespace], int]

_COMMON_EPILOG = (
    "The stack is found by name: SSM parameters under /<stack-name>/ and the CloudFormation stack's\n"
    "outputs. Credentials, region and endpoints come from the usual AWS settings: AWS_PROFILE,\n"
    "AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL (the local runtime's\n"
    "loopback servers work the same way). Exit codes: 0 done, 1 some items failed, 2 nothing done\n"
    "(stack not found, credentials missing, bad arguments)."
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _runner(body: Body) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        err = sys.stderr

        def warn(message: str) -> None:
            err.write(f"imgcap: warning: {message}\n")

        try:
            clients = AwsClients(max_pool_connections=int(getattr(args, "concurrency", 16)))
            stack = resolve_stack(clients, args.stack_name, warn=warn)
            return body(OpsContext.for_stack(clients, stack), args)
        except Exception as exc:
            explained = explain(exc)
            if explained is not None:
                err.write(f"imgcap: {explained.message}\n")
                return explained.exit_code
            if isinstance(exc, OSError):
                err.write(f"imgcap: {exc}\n")
                return EXIT_FAILED
            raise

    return run


def _add(
    sub: Any,
    name: str,
    body: Body,
    *,
    help_text: str,
    description: str,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=_COMMON_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--stack-name",
        default=DEFAULT_STACK_NAME,
        metavar="NAME",
        help=f"the deployed stack (default: {DEFAULT_STACK_NAME})",
    )
    parser.set_defaults(func=_runner(body))
    return parser


# -- command bodies -----------------------------------------------------------------------------
def _upload(ctx: OpsContext, args: argparse.Namespace) -> int:
    from imgcap.ops import upload

    summary = upload.run(
        ctx,
        Path(args.directory),
        prefix=args.prefix,
        concurrency=args.concurrency,
        exclude=args.exclude or (),
        dry_run=args.dry_run,
    )
    return EXIT_FAILED if summary.failed else EXIT_OK


def _status(ctx: OpsContext, args: argparse.Namespace) -> int:
    from imgcap.ops import status

    status.run(
        ctx,
        as_json_output=args.json,
        recent=args.recent,
        read_usage=not args.no_usage,
        input_price=args.input_price_per_1k,
        output_price=args.output_price_per_1k,
        concurrency=args.concurrency,
    )
    return EXIT_OK


def _report(ctx: OpsContext, args: argparse.Namespace) -> int:
    from imgcap.ops import report

    report.run(
        ctx,
        out=Path(args.out),
        limit=args.limit,
        prefix=args.prefix,
        max_image_mb=args.max_image_mb,
        concurrency=args.concurrency,
    )
    return EXIT_OK


def _redrive(ctx: OpsContext, args: argparse.Namespace) -> int:
    from imgcap.ops import redrive

    result = redrive.run(ctx, max_messages=args.max)
    return EXIT_FAILED if result.failed else EXIT_OK


def _reprocess(ctx: OpsContext, args: argparse.Namespace) -> int:
    from imgcap.ops import reprocess
    from imgcap.ops.upload import normalise_prefix

    prefix = "" if args.all else normalise_prefix(args.prefix)
    if not args.all and not prefix:
        raise OpsError("--prefix is empty: pass --all to reprocess every image in the bucket")
    result = reprocess.run(
        ctx, prefix=prefix, dry_run=args.dry_run, reencode=args.reencode, concurrency=args.concurrency
    )
    return EXIT_FAILED if result.failures else EXIT_OK


def _export(ctx: OpsContext, args: argparse.Namespace) -> int:
    from imgcap.ops import export

    export.run(
        ctx,
        fmt=args.format,
        out=Path(args.out) if args.out else None,
        include_errors=args.include_errors,
        concurrency=args.concurrency,
    )
    return EXIT_OK


# -- registration -------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    """Add the operator subcommands to ``imgcap``'s subparsers."""
    p = _add(
        subparsers,
        "upload",
        _upload,
        help_text="upload a folder to the stack's images/ prefix (like aws s3 sync)",
        description=(
            "Upload every file below DIR to s3://BUCKET/images/[SUBDIR/]<relative path>, like\n"
            "`aws s3 sync DIR s3://BUCKET/images/`: POSIX separators, any file type (the pipeline\n"
            "records an error for files it cannot use). Unchanged files (same size and MD5) are\n"
            "skipped. Each uploaded image is resized and captioned by the deployed pipeline: one paid\n"
            "model call per new or changed image."
        ),
    )
    p.add_argument("directory", metavar="DIR", help="local folder to upload")
    p.add_argument("--prefix", metavar="SUBDIR", help="put the files under images/SUBDIR/")
    p.add_argument("--concurrency", type=_positive_int, default=8, metavar="N", help="parallel uploads (8)")
    p.add_argument(
        "--exclude",
        action="append",
        metavar="PATTERN",
        help="skip files whose relative path or name matches this glob (repeatable), e.g. '.*'",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded; send nothing")

    p = _add(
        subparsers,
        "status",
        _status,
        help_text="objects per prefix, queue depths, recent errors, tokens and cost",
        description=(
            "Show where the pipeline stands: objects per prefix (images/, base64_images/, captions/,\n"
            "errors/), images still pending (no caption and no error yet), caption queue and DLQ depth,\n"
            "the newest error records by code, and the tokens used by all captions with the estimated\n"
            "model cost. Reads every caption record (use --no-usage on very large buckets)."
        ),
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--recent", type=_positive_int, default=20, metavar="N", help="newest error records read (20)"
    )
    p.add_argument("--no-usage", action="store_true", help="skip reading caption records (no token totals)")
    p.add_argument(
        "--input-price-per-1k",
        type=_non_negative_float,
        default=None,
        metavar="USD",
        help=f"a flat price per 1,000 input tokens (default: each caption's model and tier from the "
        f"contract's price table; Nova Pro is {INPUT_PRICE_PER_1K})",
    )
    p.add_argument(
        "--output-price-per-1k",
        type=_non_negative_float,
        default=None,
        metavar="USD",
        help=f"a flat price per 1,000 output tokens (default: each caption's model and tier from the "
        f"contract's price table; Nova Pro is {OUTPUT_PRICE_PER_1K})",
    )
    p.add_argument("--concurrency", type=_positive_int, default=16, metavar="N", help="parallel reads (16)")

    p = _add(
        subparsers,
        "report",
        _report,
        help_text="write an HTML gallery: images, captions, errors",
        description=(
            "Write the same HTML gallery as the local runtime, from the stack's bucket: each upload\n"
            "under images/ beside its caption, or its error record with the reason."
        ),
    )
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the HTML (e.g. report.html)")
    p.add_argument("--limit", type=_positive_int, default=200, metavar="N", help="at most N entries (200)")
    p.add_argument("--prefix", metavar="SUBDIR", help="only images under images/SUBDIR/")
    p.add_argument(
        "--max-image-mb",
        type=_non_negative_float,
        default=40.0,
        metavar="MB",
        help="preview larger uploads from their 1280x720 encoded copy (40)",
    )
    p.add_argument("--concurrency", type=_positive_int, default=8, metavar="N", help="parallel reads (8)")

    p = _add(
        subparsers,
        "redrive",
        _redrive,
        help_text="move dead-letter queue messages back to the caption queue",
        description=(
            "Move messages from the dead-letter queue back to the caption queue: receive, send the same\n"
            "body to the caption queue, delete from the DLQ. Works the same on AWS and on the local\n"
            "runtime (moto has no StartMessageMoveTask). Fix the cause first (see `imgcap status`):\n"
            "each moved message is captioned again, one paid model call each."
        ),
    )
    p.add_argument(
        "--max", type=_positive_int, default=10_000, metavar="N", help="move at most N messages (10000)"
    )

    p = _add(
        subparsers,
        "reprocess",
        _reprocess,
        help_text="caption images again (one paid model call each)",
        description=(
            "Caption the images under images/PREFIX again, e.g. after changing the prompt or the\n"
            "model in SSM. For each image its caption and error records are deleted and the object\n"
            "is copied onto itself with new metadata (CopyObject, MetadataDirective=REPLACE). That is\n"
            "a new S3 ObjectCreated:Copy event, so the normal pipeline resizes it (or reuses the\n"
            "encoded copy) and captions it again.\n"
            "\n"
            "COST: every image is one new paid Bedrock call (Nova Pro: about $0.002-0.003 per image\n"
            "at list price). The old captions are deleted, not kept. Run with --dry-run first."
        ),
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--prefix", metavar="P", help="images under images/P/ (e.g. trips/2024)")
    which.add_argument("--all", action="store_true", help="every image in the bucket")
    p.add_argument("--dry-run", action="store_true", help="list the images and the cost; change nothing")
    p.add_argument(
        "--reencode",
        action="store_true",
        help="also delete the encoded copies (after a target-size or resize-policy change)",
    )
    p.add_argument("--concurrency", type=_positive_int, default=8, metavar="N", help="parallel requests (8)")

    p = _add(
        subparsers,
        "export",
        _export,
        help_text="a manifest of all captions as JSON Lines or CSV",
        description=(
            "Write one row per caption: image_key, encoded_key, caption, model_id, input_tokens,\n"
            "output_tokens, stop_reason, captioned_at, source_etag (the version of the image the\n"
            "caption describes). --include-errors adds one row per error record with status, stage,\n"
            "error_code and error_message. For dataset builders and search indexers."
        ),
    )
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="jsonl (default) or csv")
    p.add_argument("--out", metavar="FILE", help="output file (default: standard output)")
    p.add_argument("--include-errors", action="store_true", help="add rows for error records")
    p.add_argument("--concurrency", type=_positive_int, default=16, metavar="N", help="parallel reads (16)")
