"""``imgcap``: run the pipeline locally, or operate a deployed stack.

Subcommands are registered by their modules: ``imgcap.local.commands`` (``local``) and
``imgcap.ops.commands`` (``upload``, ``status``, ``report``, ``redrive``, ``reprocess``, ``export``,
``dlq``, ``smoke``).

Every parser is an ``ImgcapParser``: no abbreviated options (``--output`` is not taken for
``--output-price-per-1k``), and a usage error is one line on stderr that ends with where to read
more, exit code 2 (``imgcap.exits``), instead of the whole usage text.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any, NoReturn

from imgcap.exits import EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_USAGE

DISTRIBUTION = "image-captioning-pipeline"


class ImgcapParser(argparse.ArgumentParser):
    """argparse with ``allow_abbrev=False`` and one-line errors (plus a hint) on every parser."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {text} (see '{self.prog} --help')\n")


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    from imgcap.local import commands as local_commands
    from imgcap.ops import commands as ops_commands

    parser = ImgcapParser(
        prog="imgcap",
        description="Serverless image captioning pipeline: local runtime and operator commands.",
        epilog=EXIT_CODES_HELP
        + "\n\nEvery command takes --json: one JSON object on standard output, human text on stderr.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"imgcap {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ImgcapParser)
    local_commands.register(sub)
    ops_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
