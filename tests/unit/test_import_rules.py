"""The import rules of docs/architecture.md, checked by parsing every module's imports (no imports run).

- ``infra/`` imports nothing from ``lambdas`` but the standard-library contract;
- the contract imports only the standard library;
- code under ``lambdas/`` never imports ``imgcap``, ``infra``, ``tests`` or ``bench``;
- the pure domain modules never import boto3, botocore, handlers, adapters or settings.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = [
    "lambdas/caption/model.py",
    "lambdas/caption/pacing.py",
    "lambdas/caption/capacity.py",
    "lambdas/caption/backoff.py",
    "lambdas/caption/structured.py",
    "lambdas/caption/prompts.py",
    "lambdas/caption/tagging.py",
    "lambdas/resize/events.py",
    "lambdas/shared/keys.py",
    "lambdas/shared/records.py",
    "lambdas/shared/config.py",
    "lambdas/shared/contract.py",
    *(f"lambdas/backfill/{m}.py" for m in ("jsonl", "output", "records", "estimate", "requests")),
    "lambdas/index/domain.py",
    "lambdas/index/embeddings.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "lambdas/resize/imaging").glob("*.py")),
]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _py(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_infra_imports_only_the_contract_from_lambdas():
    offenders = {
        str(p.relative_to(ROOT)): sorted(n for n in imports_of(p) if n.split(".")[0] == "lambdas")
        for p in [*_py("infra"), ROOT / "app.py"]
    }
    allowed = {"lambdas.shared", "lambdas.shared.contract"}
    assert {k: v for k, v in offenders.items() if set(v) - allowed} == {}


def test_the_contract_imports_only_the_standard_library():
    names = imports_of(ROOT / "lambdas/shared/contract.py")
    assert {n for n in names if n.split(".")[0] not in sys.stdlib_module_names and n != "__future__"} == set()


def test_lambda_code_never_imports_the_cli_infra_or_tests():
    bad = {"imgcap", "infra", "tests", "bench"}
    offenders = {
        str(p.relative_to(ROOT)): sorted(n for n in imports_of(p) if n.split(".")[0] in bad)
        for p in _py("lambdas")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("module", DOMAIN)
def test_domain_modules_import_no_sdk_handler_adapter_or_settings(module):
    forbidden = ("boto3", "botocore", "aws_lambda_powertools")
    forbidden_local = (
        "lambdas.caption.handler",
        "lambdas.resize.handler",
        "lambdas.shared.storage",
        "lambdas.shared.settings",
        "lambdas.shared.aws",
        "lambdas.caption.bedrock",
    )
    names = imports_of(ROOT / module)
    assert {n for n in names if n.split(".")[0] in forbidden or n.startswith(forbidden_local)} == set()
