"""The exit codes of every ``imgcap`` command: one meaning each, everywhere.

The README's "Exit codes" table and ``imgcap --help`` print ``EXIT_CODES_HELP``; scripts can rely
on them (``imgcap upload DIR --wait || ...``).
"""

from __future__ import annotations

EXIT_OK = 0  # everything asked for is done (every image final and captioned, every message moved)
EXIT_FAILED = 1  # the command ran, but some work failed or is not final yet (see its output)
EXIT_USAGE = 2  # bad arguments or bad local input (missing folder, output is a directory...): nothing done
EXIT_AWS = 3  # the stack or AWS is not reachable or misconfigured (stack not found, no credentials, denied)
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES = {
    EXIT_OK: "ok: everything asked for is done",
    EXIT_FAILED: "some work failed or is not final (rejected images, DLQ, timeouts, failed items)",
    EXIT_USAGE: "usage or bad input (bad argument, missing folder, unwritable output): nothing was done",
    EXIT_AWS: "the stack or AWS is not reachable or misconfigured (stack not found, credentials, access)",
}

EXIT_CODES_HELP = "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())
