"""``imgcap``: run the pipeline locally, or operate a deployed stack.

Subcommands are registered by their modules: ``imgcap.local.commands`` (``local``) and
``imgcap.ops.commands`` (``upload``, ``status``, ``report``, ``redrive``, ``reprocess``, ``export``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from imgcap.local import commands as local_commands
    from imgcap.ops import commands as ops_commands

    parser = argparse.ArgumentParser(
        prog="imgcap",
        description="Serverless image captioning pipeline: local runtime and operator commands.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
        return 130


if __name__ == "__main__":
    sys.exit(main())
