"""The ``imgcap local`` subcommand: argument parsing only; the work is in ``runtime.run_local``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from imgcap.local.faults import FaultSpecError, parse_faults
from lambdas.shared.contract import CAPTION_FORMATS, DEFAULT_STACK_NAME, SERVICE_TIERS

EPILOG = """\
Everything runs on 127.0.0.1: moto (S3, SQS, SSM), a Bedrock Converse stand-in and an event-source
emulator that runs the real Lambda handlers in worker processes. Exit status 0 only when every
upload reached a final state (a caption, an error record, the DLQ or the resize failure queue).

--faults injects shares of model calls as faults, e.g.
  throttle=0.2,server=0.05,timeout=0.02,validation=0.01,model=0.01
(throttles, 5xx, read timeouts, ValidationException, ModelErrorException); scripted faults such as
"ok*2,timeout*1" fail exactly those calls; seed=N fixes the random draw.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _batch_size(text: str) -> int:
    value = int(text)
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
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        help="maximum concurrency of the caption event source mapping (default: %(default)s)",
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
        help="keep the servers up afterwards and print the endpoint environment for other commands",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from imgcap.local.options import LocalOptions, LocalRunError
    from imgcap.local.runtime import run_local

    try:
        faults = parse_faults(args.faults)
    except FaultSpecError as exc:
        print(f"imgcap local: --faults: {exc}", file=sys.stderr)
        return 2
    options = LocalOptions(
        images=args.images,
        out=args.out,
        captioner=args.captioner,
        rpm=args.rpm,
        concurrency=args.concurrency,
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
    )
    if args.captioner == "bedrock" and not faults.is_empty:
        print(
            "imgcap local: --faults applies to the stand-in only; ignored with --captioner bedrock",
            file=sys.stderr,
        )
    try:
        result = run_local(options)
    except LocalRunError as exc:
        print(f"imgcap local: {exc}", file=sys.stderr)
        return 2
    return result.exit_code
