"""Asset bundling without Docker (no Docker engine exists where this project is built).

Two ``aws_cdk.ILocalBundling`` implementations; CDK calls ``try_bundle`` with an empty output
directory and uses what it finds there as the asset:

* ``PackageCopyBundling`` stages the Lambda code: the ``lambdas/`` package at the asset root,
  without ``__pycache__``/``*.pyc``, so nothing else of the repository (tests, .venv,
  node_modules, cdk.out) can end up in the function zip.
* ``PipLayerBundling`` builds the dependency layer with pip's cross-platform download support:
  wheels only, CPython, the Lambda runtime's Python version, manylinux aarch64 (Pillow ships only
  ``manylinux_2_28`` wheels for recent versions, so that tag comes first). The Lambda runtime
  already provides boto3/botocore/s3transfer, so they are pruned to keep the layer small.

Both return True (bundled) or raise: returning False would make CDK fall back to Docker.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import DockerImage, ILocalBundling

# Provided by the Lambda Python runtime; installing them again only bloats the layer.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
_JUNK_DIRS = ("__pycache__",)
_JUNK_SUFFIXES = (".pyc", ".pyo")

Runner = Callable[[Sequence[str]], None]


def _run(command: Sequence[str]) -> None:
    """Run a bundling command; a failure raises with pip's own output attached."""
    result = subprocess.run(list(command), capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        output = f"{result.stdout}\n{result.stderr}".strip()
        raise RuntimeError(f"layer bundling failed ({result.returncode}): {' '.join(command)}\n{output}")


def _ignore_junk(_directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in _JUNK_DIRS or n.endswith(_JUNK_SUFFIXES)}


@jsii.implements(ILocalBundling)
class PackageCopyBundling:
    """Copy one Python package directory into ``<output>/<package name>``."""

    def __init__(self, package_dir: Path) -> None:
        self._package_dir = package_dir

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_options: Any) -> bool:
        target = Path(output_dir) / self._package_dir.name
        shutil.copytree(self._package_dir, target, ignore=_ignore_junk, dirs_exist_ok=True)
        return True


@jsii.implements(ILocalBundling)
class PipLayerBundling:
    """``pip install --target <output>/python`` for the Lambda platform, then prune."""

    def __init__(
        self,
        requirements: Path,
        *,
        python_version: str,
        platforms: Sequence[str],
        runner: Runner = _run,
        python: str = sys.executable,
    ) -> None:
        self._requirements = requirements
        self._python_version = python_version
        self._platforms = tuple(platforms)
        self._runner = runner
        self._python = python

    def command(self, target: Path) -> list[str]:
        platform_args = [arg for platform in self._platforms for arg in ("--platform", platform)]
        return [
            self._python,
            "-m",
            "pip",
            "install",
            "--target",
            str(target),
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            self._python_version,
            *platform_args,
            "-r",
            str(self._requirements),
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
        ]

    def fingerprint(self) -> str:
        """Asset hash: what is installed and for which platform (not where the repo lives)."""
        digest = hashlib.sha256(self._requirements.read_bytes())
        digest.update("|".join((self._python_version, *self._platforms, *RUNTIME_PROVIDED)).encode())
        return digest.hexdigest()

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_options: Any) -> bool:
        target = Path(output_dir) / "python"
        self._runner(self.command(target))
        prune_layer(target)
        return True


def prune_layer(site_dir: Path) -> None:
    """Drop what the runtime provides, console scripts and byte code from an installed tree."""
    if not site_dir.is_dir():
        raise RuntimeError(f"pip produced no {site_dir}")
    for entry in list(site_dir.iterdir()):
        name = entry.name.lower()
        dist = name.split("-", 1)[0]
        provided = name in RUNTIME_PROVIDED or (name.endswith(".dist-info") and dist in RUNTIME_PROVIDED)
        if provided or (name == "bin" and entry.is_dir()):
            shutil.rmtree(entry)
    for junk in [p for p in site_dir.rglob("*") if p.name in _JUNK_DIRS and p.is_dir()]:
        shutil.rmtree(junk, ignore_errors=True)
    for pyc in [p for p in site_dir.rglob("*") if p.suffix in _JUNK_SUFFIXES and p.is_file()]:
        pyc.unlink()
