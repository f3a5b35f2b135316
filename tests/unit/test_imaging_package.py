"""The shape of the ``lambdas.resize.imaging`` package: small documented modules, pure-domain
imports only, and the public names its callers (handler, service, bench, tests) rely on."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from lambdas.resize import imaging

pytestmark = pytest.mark.unit

PACKAGE = Path(imaging.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))
ALLOWED_PROJECT_IMPORTS = {"lambdas.shared.config", "lambdas.shared.errors"}


def _imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_given_the_package_then_it_is_split_into_the_expected_modules() -> None:
    assert [m.name for m in MODULES] == [
        "__init__.py",
        "decoding.py",
        "geometry.py",
        "guards.py",
        "modes.py",
        "pipeline.py",
        "png.py",
        "sniffing.py",
    ]


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_given_a_module_then_it_is_short_documented_and_imports_only_the_pure_domain(module: Path) -> None:
    source = module.read_text(encoding="utf-8")
    tree = ast.parse(source)
    assert len(source.splitlines()) < 300
    assert ast.get_docstring(tree)
    for name in _imports(tree):
        top = name.split(".")[0]
        assert (
            name in ALLOWED_PROJECT_IMPORTS
            or top == "PIL"
            or top == "__future__"
            or top in sys.stdlib_module_names
        ), f"{module.name} imports {name}"


def test_given_the_package_then_its_public_names_are_importable() -> None:
    for name in imaging.__all__:
        assert getattr(imaging, name) is not None
    assert {"resize_and_encode", "probe", "plan", "Plan", "EncodedImage", "encode_png"} <= set(
        imaging.__all__
    )
