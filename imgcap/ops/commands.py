"""The operator subcommands: ``upload``, ``status``, ``report``, ``redrive``, ``reprocess``, ``export``,
``dlq`` and ``smoke``.

Each one checks its local arguments first (folders, output files, confirmation: exit 2 before any
AWS call), then resolves the stack by name (SSM ``/<stack-name>/...``, CloudFormation outputs), and
turns every failure it can explain (wrong stack name, missing or expired credentials, access
denied: exit 3; a bad path: exit 2) into one line on stderr; no tracebacks for an operator to
decode. With ``--json`` the result is one JSON object on stdout (also for a failure: ``ok`` false,
``exit_code`` and ``error``) and every human line goes to stderr. Exit codes: ``imgcap.exits``.

Longer than 500 lines on purpose: it is a table of eight commands (checks, bodies, arguments),
each one small; the work itself lives in one module per command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgcap.exits import EXIT_CODES_HELP
from imgcap.ops.aws import EXIT_FAILED, EXIT_OK, EXIT_USAGE, AwsClients, OpsError, explain
from imgcap.ops.context import OpsContext
from imgcap.ops.stack import resolve_stack
from imgcap.ops.status import INPUT_PRICE_PER_1K, OUTPUT_PRICE_PER_1K
from lambdas.shared.contract import DEFAULT_STACK_NAME

Outcome = tuple[int, dict[str, Any]]  # exit code, the --json object's fields
Body = Callable[[OpsContext, argparse.Namespace], Outcome]
Check = Callable[[argparse.Namespace], None]

_COMMON_EPILOG = (
    "The stack is found by name: SSM parameters under /<stack-name>/ and the CloudFormation stack's\n"
    "outputs. Credentials, region and endpoints come from the usual AWS settings: AWS_PROFILE,\n"
    "AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL (the local runtime's\n"
    "loopback servers work the same way). --json prints one JSON object on stdout, human text on\n"
    "stderr.\n\n" + EXIT_CODES_HELP
)


def _field_list(text: str) -> tuple[str, ...]:
    from imgcap.ops.export import parse_fields

    try:
        return parse_fields(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


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


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _path_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def check_output_file(path: Path, option: str = "--out") -> None:
    """An output file we can write: not a directory, and its folder exists or can be created."""
    if path.is_dir():
        raise OpsError(f"{option} {path} is a directory: give a file name")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OpsError(f"{option} {path}: {ancestor} is a file, not a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise OpsError(f"{option} {path} is not writable")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OpsError(f"{option} {path}: cannot write in {ancestor}")


def _emit(args: argparse.Namespace, name: str, code: int, data: dict[str, Any]) -> None:
    if getattr(args, "json", False):
        document = {"command": name, "ok": code == EXIT_OK, "exit_code": code, **data}
        sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()


def _runner(name: str, body: Body, check: Check | None) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        err = sys.stderr

        def warn(message: str) -> None:
            err.write(f"imgcap: warning: {message}\n")

        try:
            if check is not None:
                check(args)
            clients = AwsClients(max_pool_connections=int(getattr(args, "concurrency", 16)))
            stack = resolve_stack(clients, args.stack_name, warn=warn)
            out = err if args.json else sys.stdout  # with --json, stdout is the JSON object only
            code, data = body(OpsContext(clients=clients, stack=stack, out=out, err=err), args)
        except Exception as exc:
            explained = explain(exc)
            if explained is None and isinstance(exc, OSError):
                explained = OpsError(_path_error(exc), EXIT_USAGE)
            if explained is None:
                raise
            err.write(f"imgcap: {explained.message}\n")
            _emit(args, name, explained.exit_code, {"error": explained.message})
            return explained.exit_code
        _emit(args, name, code, data)
        return code

    return run


def _add(
    sub: Any,
    name: str,
    body: Body,
    *,
    help_text: str,
    description: str,
    check: Check | None = None,
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
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout; human text on stderr")
    parser.set_defaults(func=_runner(name, body, check))
    return parser


class _Filter(argparse.Action):
    """--exclude/--include into one ordered list, as aws s3 sync applies them."""

    def __call__(
        self, parser: Any, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        filters = list(getattr(namespace, self.dest, None) or [])
        filters.append((self.const, str(values)))
        setattr(namespace, self.dest, filters)


# -- local checks (before any AWS call) -------------------------------------------------------------
def _check_upload(args: argparse.Namespace) -> None:
    directory = Path(args.directory)
    if not directory.is_dir():
        raise OpsError(
            f"{directory} is not a directory"
            if not directory.exists()
            else f"{directory} is not a directory (give the folder to upload)"
        )


def _check_report(args: argparse.Namespace) -> None:
    from imgcap.report import ReportPathError, report_path

    out = Path(args.out)
    check_output_file(out if out.suffix.lower() in (".html", ".htm") else out / "report.html")
    try:
        report_path(out)  # and the writer's own rule (README.md, a directory named .html)
    except ReportPathError as exc:
        raise OpsError(f"--out {exc}") from exc


def _check_export(args: argparse.Namespace) -> None:
    if args.out and args.out != "-":
        check_output_file(Path(args.out))
    elif args.json:
        raise OpsError("--json needs --out FILE: the manifest and the JSON summary cannot share stdout")


def stdin_is_terminal() -> bool:
    isatty = getattr(sys.stdin, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


def _check_reprocess(args: argparse.Namespace) -> None:
    from imgcap.ops.upload import normalise_prefix

    if not args.all and not normalise_prefix(args.prefix):
        raise OpsError("--prefix is empty: pass --all to reprocess every image in the bucket")
    if not (args.dry_run or args.yes or stdin_is_terminal()):
        raise OpsError(
            "reprocess deletes captions and pays for new ones: pass --yes to confirm "
            "(standard input is not a terminal to ask on), or --dry-run to see what it would do"
        )


def confirm_on_terminal(count: int, where: str, cost: str) -> bool:
    """Ask on the terminal; only an explicit yes goes ahead."""
    sys.stderr.write(
        f"This deletes the captions of {count} image(s) under {where} and captions them again "
        f"({count} paid model call(s), about {cost}). Continue? [y/N] "
    )
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


# -- command bodies -----------------------------------------------------------------------------
def _upload(ctx: OpsContext, args: argparse.Namespace) -> Outcome:
    from imgcap.ops import upload, wait

    summary = upload.run(
        ctx,
        Path(args.directory),
        prefix=args.prefix,
        concurrency=args.concurrency,
        filters=args.filters or (),
        dry_run=args.dry_run,
        quiet=args.quiet,
    )
    data = summary.as_dict()
    code = EXIT_FAILED if summary.failed else EXIT_OK
    if args.wait and not args.dry_run:
        sent = [wait.Sent(key, etag) for key, etag in summary.sent]
        verdicts = wait.wait_until_final(
            ctx, sent, timeout_s=args.wait_timeout, poll_s=args.poll_interval, show_progress=not args.quiet
        )
        counts = verdicts.counts(len(sent))
        rows = wait.describe(verdicts, sent)
        for row in rows:
            if row["state"] != wait.CAPTIONED:
                detail = (
                    f" {row.get('error_code')}: {row.get('message')}" if row["state"] == wait.REJECTED else ""
                )
                ctx.err.write(f"imgcap upload: {row['state']}: {row['key']}{detail}\n")
        if not args.quiet:
            ctx.say("wait: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
        data["wait"] = {"counts": counts, "images": rows}
        if any(counts[s] for s in wait.FAILED_STATES):
            code = EXIT_FAILED
    return code, data


def _status(ctx: OpsContext, args: argparse.Namespace) -> Outcome:
    from dataclasses import asdict

    from imgcap.ops import status

    options = {
        "recent": args.recent,
        "read_usage": not args.no_usage,
        "input_price": args.input_price_per_1k,
        "output_price": args.output_price_per_1k,
        "concurrency": args.concurrency,
    }
    if args.json:
        return EXIT_OK, asdict(status.collect(ctx, **options))
    status.run(ctx, **options)
    return EXIT_OK, {}


def _report(ctx: OpsContext, args: argparse.Namespace) -> Outcome:
    from imgcap.ops import report

    path = report.run(
        ctx,
        out=Path(args.out),
        limit=args.limit,
        prefix=args.prefix,
        max_image_mb=args.max_image_mb,
        concurrency=args.concurrency,
    )
    return EXIT_OK, {"out": str(path)}


def _redrive(ctx: OpsContext, args: argparse.Namespace) -> Outcome:
    from imgcap.ops import redrive

    result = redrive.run(ctx, max_messages=args.max)
    data = {"moved": result.moved, "failed": result.failed, "failures": result.failures}
    return (EXIT_FAILED if result.failed else EXIT_OK), data


def _reprocess(ctx: OpsContext, args: argparse.Namespace) -> Outcome:
    from imgcap.ops import reprocess
    from imgcap.ops.upload import normalise_prefix

    prefix = "" if args.all else normalise_prefix(args.prefix)
    result = reprocess.run(
        ctx,
        prefix=prefix,
        dry_run=args.dry_run,
        reencode=args.reencode,
        concurrency=args.concurrency,
        confirm=None if args.yes else confirm_on_terminal,
    )
    data = {
        "dry_run": args.dry_run,
        "selected": len(result.selected),
        "triggered": result.triggered,
        "declined": result.declined,
        "failures": [{"key": k, "reason": r} for k, r in result.failures],
    }
    return (EXIT_FAILED if result.failures or result.declined else EXIT_OK), data


def _export(ctx: OpsContext, args: argparse.Namespace) -> Outcome:
    from dataclasses import asdict

    from imgcap.ops import export

    result = export.run(
        ctx,
        fmt=args.format,
        out=Path(args.out) if args.out else None,
        include_errors=args.include_errors,
        concurrency=args.concurrency,
        fields=args.fields,
    )
    return EXIT_OK, asdict(result)


def _dlq(ctx: OpsContext, args: argparse.Namespace) -> Outcome:
    from imgcap.ops import dlq

    listing = dlq.collect(ctx, limit=args.max)
    if not args.json:
        ctx.say(dlq.as_text(listing))
    return EXIT_OK, listing.as_dict()


def _smoke(ctx: OpsContext, args: argparse.Namespace) -> Outcome:
    from imgcap.ops import smoke

    result = smoke.run(ctx, timeout_s=args.timeout, poll_s=args.poll_interval, keep=args.keep)
    return (EXIT_OK if result.passed else EXIT_FAILED), result.as_dict()


def _backfill(ctx: OpsContext, args: argparse.Namespace) -> Outcome:
    from imgcap.ops import backfill

    return backfill.command(ctx, args)


# -- registration -------------------------------------------------------------------------------
def register(subparsers: Any) -> None:  # noqa: PLR0915 - one block per subcommand
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
            "model call per new or changed image.\n"
            "\n"
            "--exclude/--include work like aws s3 sync's: every file is included by default, the\n"
            "filters apply in the order given and the last one that matches wins; patterns match the\n"
            "path relative to DIR ('*' also matches '/'). E.g. --exclude '*' --include '*.jpg'."
        ),
        check=_check_upload,
    )
    p.add_argument("directory", metavar="DIR", help="local folder to upload")
    p.add_argument("--prefix", metavar="SUBDIR", help="put the files under images/SUBDIR/")
    p.add_argument("--concurrency", type=_positive_int, default=8, metavar="N", help="parallel uploads (8)")
    p.add_argument(
        "--exclude",
        dest="filters",
        action=_Filter,
        const="exclude",
        metavar="PATTERN",
        help="leave out files whose path relative to DIR matches (repeatable; like aws s3 sync)",
    )
    p.add_argument(
        "--include",
        dest="filters",
        action=_Filter,
        const="include",
        metavar="PATTERN",
        help="take back files an earlier --exclude left out (filters apply in order, the last match wins)",
    )
    p.add_argument(
        "--dry-run",
        "--dryrun",
        dest="dry_run",
        action="store_true",
        help="list what would be uploaded (new or changed files); send nothing",
    )
    p.add_argument(
        "--quiet", action="store_true", help="print only failures (no progress, no per-file lines)"
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="then wait until every uploaded file is final (caption, error record, DLQ); "
        "exit 1 if any did not end captioned",
    )
    p.add_argument(
        "--wait-timeout",
        type=_positive_float,
        default=1800.0,
        metavar="S",
        help="give up waiting after S seconds and name what is not final (1800)",
    )
    p.add_argument(
        "--poll-interval", type=_positive_float, default=5.0, metavar="S", help="seconds between checks (5)"
    )

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
        check=_check_report,
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="where to write the HTML: a .html file, or a folder that gets report.html",
    )
    p.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        metavar="N",
        help='only the first N entries by key; the page and this line then say "N of M" (default: all)',
    )
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
            "at list price). The old captions are deleted, not kept. Run with --dry-run first.\n"
            "On a terminal it asks before changing anything; elsewhere it needs --yes."
        ),
        check=_check_reprocess,
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--prefix", metavar="P", help="images under images/P/ (e.g. trips/2024)")
    which.add_argument("--all", action="store_true", help="every image in the bucket")
    p.add_argument(
        "--dry-run",
        "--dryrun",
        dest="dry_run",
        action="store_true",
        help="list the images and the cost; change nothing",
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation (needed off a terminal)")
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
            "Write one row per caption with every field of its record: image_key, encoded_key,\n"
            "caption, model_id, input_tokens, output_tokens, stop_reason, captioned_at, source_etag\n"
            "(the version of the image the caption describes), status, then the rest by name (nested\n"
            "fields joined with '_': resize_policy, source_width...). --fields chooses the columns.\n"
            "--include-errors adds one row per error record (status error, stage, error_code,\n"
            "error_message). CSV cells a spreadsheet would run as a formula start with an apostrophe.\n"
            "Rows: docs/schemas/export-row.schema.json. For dataset builders and search indexers.\n"
            "With --json the manifest needs --out FILE (stdout carries the JSON summary)."
        ),
        check=_check_export,
    )
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="jsonl (default) or csv")
    p.add_argument("--out", metavar="FILE", help="output file (default: standard output)")
    p.add_argument("--include-errors", action="store_true", help="add rows for error records")
    p.add_argument(
        "--fields",
        type=_field_list,
        metavar="A,B,C",
        help="only these columns, in this order (default: every field)",
    )
    p.add_argument("--concurrency", type=_positive_int, default=16, metavar="N", help="parallel reads (16)")

    p = _add(
        subparsers,
        "dlq",
        _dlq,
        help_text="list the dead-letter queue per image, without consuming it",
        description=(
            "List the messages in the caption dead-letter queue, per image: source key, receive count,\n"
            "first and last time it was sent for captioning, and the latest error written down for it\n"
            "(its errors/ record, else the caption stage's latest configuration fault in\n"
            "health/caption.json). Nothing is consumed: each message is received and made visible again\n"
            "at once. Caveats: during the listing (seconds) the messages are invisible to other readers,\n"
            "and each listing adds one to their receive count."
        ),
    )
    p.add_argument(
        "--max", type=_positive_int, default=10_000, metavar="N", help="look at most at N messages (10000)"
    )

    p = _add(
        subparsers,
        "smoke",
        _smoke,
        help_text="end-to-end check of a deployed stack with three generated images",
        description=(
            "Upload three generated images under images/smoke/<unique id>/ (two good ones and one broken\n"
            "file), wait until each is final, check that the good ones have captions for exactly the\n"
            "uploaded version and the broken one has an error record from the resize stage, print a\n"
            "verdict and delete everything it wrote (images, encoded copies, captions, error records,\n"
            "claims). COST: two paid model calls (well under one cent). Exit 0 when it passes, 1 when not."
        ),
    )
    p.add_argument(
        "--timeout", type=_positive_float, default=600.0, metavar="S", help="give up after S seconds (600)"
    )
    p.add_argument(
        "--poll-interval", type=_positive_float, default=5.0, metavar="S", help="seconds between checks (5)"
    )
    p.add_argument("--keep", action="store_true", help="leave the smoke test's objects in the bucket")

    from imgcap.ops import backfill

    p = _add(
        subparsers,
        "backfill",
        _backfill,
        help_text="caption an archive with Bedrock batch inference (about half the on-demand price)",
        description=backfill.DESCRIPTION,
        check=backfill.check_arguments,
    )
    backfill.add_arguments(p)

    from imgcap.ops import search  # issue 17: `imgcap search`, `imgcap reindex`

    search.register(subparsers, _add, _positive_int)
