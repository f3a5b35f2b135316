"""What every operator command receives: clients, the resolved stack, and where to print."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

from imgcap.ops.aws import AwsClients
from imgcap.ops.stack import StackRef


@dataclass(frozen=True, slots=True)
class OpsContext:
    clients: AwsClients
    stack: StackRef
    out: TextIO  # results (tables, JSON, manifests)
    err: TextIO  # progress, warnings, per-item failures

    @classmethod
    def for_stack(cls, clients: AwsClients, stack: StackRef) -> OpsContext:
        return cls(clients=clients, stack=stack, out=sys.stdout, err=sys.stderr)

    def say(self, line: str) -> None:
        self.out.write(line + "\n")

    def warn(self, line: str) -> None:
        self.err.write(f"imgcap: warning: {line}\n")


def usd(amount: float) -> str:
    """Dollars with cents, or with four decimals below a dollar (one image costs a fraction of a cent)."""
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover - loop always returns
