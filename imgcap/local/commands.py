"""The ``imgcap local`` subcommand: argument parsing only; the work is in ``runtime.run_local``."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from imgcap.exits import EXIT_CODES_HELP, EXIT_USAGE
from imgcap.local.batch_standin import BatchFaultError, parse_batch_faults
from imgcap.local.faults import FaultSpecError, parse_faults
from lambdas.shared.config import ConfigError
from lambdas.shared.contract import (
    BATCH_LIMIT_RANGES,
    CAPTION_FORMATS,
    DEFAULT_STACK_NAME,
    SERVICE_TIERS,
    BatchLimits,
    parse_batch_limits,
)

EPILOG = (
    """\
Everything runs on 127.0.0.1: moto (S3, SQS, SSM), a Bedrock Converse stand-in and an event-source
emulator that runs the real Lambda handlers in worker processes. Exit status 0 only when every
upload reached a final state (a caption, an error record, the DLQ or the resize failure queue);
1 when some did not; 2 for bad arguments, an --images folder that is missing or has no files, or
an --out that is not a writable folder. --json prints summary.json's content on stdout at the end.
--keep-running then keeps following new uploads (a progress line for new work) and OUT/logs current.

--faults injects shares of model calls as faults, e.g.
  throttle=0.2,server=0.05,timeout=0.02,validation=0.01,model=0.01
(throttles, 5xx, read timeouts, ValidationException, ModelErrorException); scripted faults such as
"ok*2,timeout*1" fail exactly those calls; seed=N fixes the random draw.

--mode batch captions through a backfill instead (what `imgcap backfill` starts in the cloud):
the uploads are resized, then the submit function builds the JSONL files and creates a Bedrock
batch inference job on the stand-in's control plane, and the collect function turns the job's
output into caption records (mode "batch", priced at the batch rate) when the job's state-change
event or the scheduled poll finds it done. --batch-faults injects, e.g.
  failed_records=0.05,partial_jobs=1,failed_jobs=1,drop_events=1
(error lines for a share of records, jobs that end PartiallyCompleted or Failed, lost completion
events); --batch-limits sets the job limits, e.g. min_records=100,max_records_per_job=100.

"""
    + EXIT_CODES_HELP
)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _concurrency(text: str) -> int | None:
    """``auto`` (None) or a number of caption workers."""
    if text.strip().lower() == "auto":
        return None
    return _positive_int(text)


def _latency(text: str) -> Any:
    from imgcap.local.latency import LatencySpecError, parse_standin_latency

    try:
        return parse_standin_latency(text)
    except LatencySpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _batch_size(text: str) -> int:
    value = _int(text)
    if not 1 <= value <= 10:
        raise argparse.ArgumentTypeError("must be between 1 and 10")
    return value


def _folder_prompt(text: str) -> tuple[str, str]:
    folder, sep, prompt = text.partition("=")
    folder = folder.strip().strip("/")
    if not sep or not folder or not prompt.strip():
        raise argparse.ArgumentTypeError("must look like FOLDER=PROMPT (FOLDER is a path below images/)")
    if not re.fullmatch(r"[A-Za-z0-9_.\-/]+", folder):
        raise argparse.ArgumentTypeError(
            f"folder {folder!r}: an SSM parameter name allows only letters, digits and _ . - /"
        )
    return folder, prompt.strip()


def register(subparsers: Any) -> None:
    from imgcap.local.options import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, DEFAULT_RPM, DEFAULT_TIMEOUT_S

    parser = subparsers.add_parser(
        "local",
        help="run the whole pipeline locally on a folder of images",
        description="Run the pipeline on loopback servers with the same handler code that ships to Lambda.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--images", type=Path, required=True, help="folder whose files are uploaded")
    parser.add_argument(
        "--out", type=Path, required=True, help="where captions, errors, summary and report go"
    )
    parser.add_argument(
        "--captioner",
        choices=("standin", "bedrock"),
        default="standin",
        help="standin: offline Converse stand-in; bedrock: the real Bedrock runtime with your "
        "credentials (default: %(default)s)",
    )
    parser.add_argument(
        "--rpm",
        type=_positive_float,
        default=DEFAULT_RPM,
        help="requests per minute: the stand-in's quota and the pacing in SSM (default: %(default)g)",
    )
    parser.add_argument(
        "--tpm",
        type=_positive_float,
        default=None,
        help="tokens per minute: the stand-in's tokens quota and the pacing in SSM (default: "
        "the stack's 400,000 pacing, no stand-in tokens quota)",
    )
    parser.add_argument(
        "--concurrency",
        type=_concurrency,
        default=DEFAULT_CONCURRENCY,
        metavar="auto|N",
        help="caption workers (the event source mapping's maximum concurrency); auto covers --rpm "
        "at the expected model latency with 25%% headroom (default: %(default)s)",
    )
    parser.add_argument(
        "--standin-latency",
        type=_latency,
        default="nova-pro",
        metavar="nova-pro|fast|SECONDS",
        help="how long the stand-in takes: nova-pro follows the answer's length like the real model "
        "(~3.8 s a call); fast is 0.3-0.8 s with short answers; a number is a fixed latency "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=_batch_size,
        default=DEFAULT_BATCH_SIZE,
        help="caption event source mapping batch size (default: %(default)s)",
    )
    parser.add_argument(
        "--faults", default="", metavar="SPEC", help="fault injection (see below; default: none)"
    )
    parser.add_argument(
        "--stack-name", default=DEFAULT_STACK_NAME, help="names and SSM prefix (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_S,
        help="give up after this many seconds and name what is not final (default: %(default)g)",
    )
    parser.add_argument("--policy", choices=("pad", "crop", "stretch"), help="resize policy (default: pad)")
    parser.add_argument("--prompt", help="override the prompt (SSM prompt)")
    parser.add_argument("--model-id", help="override the model id (SSM model-id)")
    parser.add_argument(
        "--caption-format",
        choices=CAPTION_FORMATS,
        help="text: one paragraph; structured: description, alt text, tags, visible text "
        "(SSM caption-format)",
    )
    parser.add_argument(
        "--folder-prompt",
        type=_folder_prompt,
        action="append",
        default=[],
        metavar="FOLDER=PROMPT",
        help="a prompt for images under images/FOLDER/ (SSM prompts/FOLDER; repeatable; {filename} and "
        '{folder} are filled in; a JSON value {"prompt": ..., "format": ...} also sets the format)',
    )
    parser.add_argument("--service-tier", choices=SERVICE_TIERS, help="SSM service-tier (default: default)")
    parser.add_argument(
        "--write-object-tags",
        action="store_true",
        help="write the structured tags to the uploads as S3 object tags (-c writeObjectTags=true)",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the servers up afterwards, print the endpoint environment for other commands, and "
        "keep showing progress for new uploads (Ctrl-C to stop)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the run's summary as one JSON object on stdout"
    )
    parser.add_argument(
        "--mode",
        choices=("online", "batch"),
        default="online",
        help="online: the caption queue and Converse at the quota; batch: a backfill through "
        "Bedrock batch inference on the stand-in (half price; default: %(default)s)",
    )
    parser.add_argument(
        "--batch-faults", default="", metavar="SPEC", help="--mode batch fault injection (see below)"
    )
    parser.add_argument(
        "--batch-limits",
        default="",
        metavar="K=V,...",
        help="--mode batch job limits (BatchLimits fields or backfill* context keys; default: the "
        "stack's, e.g. a job needs at least 100 records)",
    )
    parser.add_argument(
        "--no-search",
        dest="search",
        action="store_false",
        help="leave out the index stage (S3 Vectors stand-in, embeddings, `imgcap search`)",
    )
    parser.set_defaults(func=run)


def _batch_limits(text: str) -> BatchLimits:
    values: dict[str, object] = {}
    for part in text.split(","):
        if part.strip():
            name, sep, value = part.partition("=")
            known = {*BATCH_LIMIT_RANGES, *(key for key, _, _ in BATCH_LIMIT_RANGES.values())}
            if not sep or name.strip() not in known:
                raise ValueError(
                    f"--batch-limits: {part.strip()!r} is not NAME=VALUE with NAME one of "
                    + ", ".join(sorted(BATCH_LIMIT_RANGES))
                )
            values[name.strip()] = value.strip()
    return parse_batch_limits(values, label="--batch-limits:")


def check_paths(images: Path, out: Path) -> str | None:
    """Why the run cannot start with these folders (one line), or None."""
    if not images.exists():
        return f"--images {images} does not exist"
    if not images.is_dir():
        return f"--images {images} is not a directory"
    if not any(p.is_file() for p in images.rglob("*")):
        return f"--images {images} has no files to upload"
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a folder"
    ancestor = out
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"--out {out}: {ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"--out {out}: cannot write in {ancestor}"
    return None


def run(args: argparse.Namespace) -> int:
    from imgcap.local.options import LocalOptions, LocalRunError
    from imgcap.local.runtime import run_local

    problem = check_paths(args.images, args.out)
    if problem is not None:
        return _fail(args, problem)
    try:
        faults = parse_faults(args.faults)
    except FaultSpecError as exc:
        return _fail(args, f"--faults: {exc}")
    try:
        batch_faults = parse_batch_faults(args.batch_faults)
        batch_limits = _batch_limits(args.batch_limits)
    except (BatchFaultError, ConfigError, ValueError) as exc:
        return _fail(args, str(exc))
    if args.mode == "batch" and args.captioner != "standin":
        return _fail(
            args,
            "--mode batch needs --captioner standin: a real Bedrock batch job cannot read the local "
            "bucket (deploy the stack and run `imgcap backfill` for that)",
        )
    options = LocalOptions(
        images=args.images,
        out=args.out,
        captioner=args.captioner,
        rpm=args.rpm,
        concurrency=args.concurrency,
        standin_latency=args.standin_latency,
        tpm=args.tpm,
        batch_size=args.batch_size,
        faults=faults,
        stack_name=args.stack_name,
        timeout_s=args.timeout,
        policy=args.policy,
        prompt=args.prompt,
        model_id=args.model_id,
        keep_running=args.keep_running,
        caption_format=args.caption_format,
        service_tier=args.service_tier,
        folder_prompts=tuple(args.folder_prompt),
        write_object_tags=args.write_object_tags,
        search=args.search,
        mode=args.mode,
        batch_faults=batch_faults,
        batch_limits=batch_limits,
    )
    if args.captioner == "bedrock" and not faults.is_empty:
        print(
            "imgcap local: --faults applies to the stand-in only; ignored with --captioner bedrock",
            file=sys.stderr,
        )
    on_summary = _print_summary if args.json else None
    try:
        result = run_local(options, on_summary=on_summary)
    except LocalRunError as exc:
        return _fail(args, str(exc))
    except OSError as exc:  # OUT became unwritable, a disk filled up...
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(args, f"{where}{exc.strerror or exc}")
    return result.exit_code


def _print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def _print_summary(summary: dict[str, Any]) -> None:
    """--json: the summary as one JSON object on stdout (before --keep-running follows new work)."""
    from imgcap.local.options import LocalResult

    code = LocalResult(summary=summary, out=Path(), report=Path()).exit_code
    _print_json({"command": "local", "ok": code == 0, "exit_code": code, **summary})


def _fail(args: argparse.Namespace, message: str) -> int:
    """One line on stderr (and with --json one JSON object on stdout); exit 2."""
    print(f"imgcap local: {message}", file=sys.stderr)
    if args.json:
        _print_json({"command": "local", "ok": False, "exit_code": EXIT_USAGE, "error": message})
    return EXIT_USAGE
