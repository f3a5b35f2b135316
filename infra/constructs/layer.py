"""The one dependency layer (Pillow + Powertools with the tracer extra) and the function code asset.

Both are staged without Docker through ``infra.bundling``. The layer's asset hash is the
requirements file plus the target platform, so an unchanged layer is not rebuilt or re-uploaded.
"""

from __future__ import annotations

from aws_cdk import AssetHashType, BundlingOptions, DockerImage
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.bundling import PackageCopyBundling, PipLayerBundling
from infra.config import (
    LAMBDA_PACKAGE_DIR,
    LAMBDA_PYTHON_VERSION,
    LAYER_PLATFORMS,
    LAYER_REQUIREMENTS,
    PROJECT_ROOT,
)
from infra.constructs.function import ARCHITECTURE, RUNTIME

# Never pulled: local bundling always succeeds or raises, so CDK never falls back to Docker.
_NO_DOCKER = DockerImage.from_registry("unused-local-bundling-only")


class DependenciesLayer(Construct):
    """``layer``: site-packages for the arm64 Python runtime under ``python/``."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        bundler = PipLayerBundling(
            LAYER_REQUIREMENTS, python_version=LAMBDA_PYTHON_VERSION, platforms=LAYER_PLATFORMS
        )
        self.layer = lambda_.LayerVersion(
            self,
            "Layer",
            description="Pillow and aws-lambda-powertools[tracer] (requirements-layer.txt) for arm64",
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            code=lambda_.Code.from_asset(
                # The source directory is not read (CDK only checks it exists): the bundler reads
                # requirements-layer.txt, and the custom hash keeps CDK from fingerprinting the repo.
                str(PROJECT_ROOT),
                asset_hash_type=AssetHashType.CUSTOM,
                asset_hash=bundler.fingerprint(),
                bundling=BundlingOptions(image=_NO_DOCKER, local=bundler),
            ),
        )


def function_code() -> lambda_.Code:
    """The ``lambdas/`` package at the asset root (handlers are ``lambdas.<stage>.handler...``)."""
    return lambda_.Code.from_asset(
        str(LAMBDA_PACKAGE_DIR),
        asset_hash_type=AssetHashType.SOURCE,
        exclude=["**/__pycache__", "**/*.pyc"],
        bundling=BundlingOptions(image=_NO_DOCKER, local=PackageCopyBundling(LAMBDA_PACKAGE_DIR)),
    )
