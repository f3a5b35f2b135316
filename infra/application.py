"""Build the CDK app: the one synth path shared by ``app.py`` (``npx cdk synth``) and the tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_cdk import App, Tags

from infra.config import PROJECT_ROOT, StackConfig
from infra.nag import enable_nag
from infra.stack import ImageCaptioningStack

CDK_JSON = PROJECT_ROOT / "cdk.json"


def cdk_json_context() -> dict[str, Any]:
    """The ``context`` block of cdk.json (feature flags), which the CDK CLI also passes in."""
    return dict(json.loads(CDK_JSON.read_text(encoding="utf-8")).get("context", {}))


def build_app(context: Mapping[str, Any] | None = None, outdir: str | None = None) -> App:
    """An App with the pipeline stack and cdk-nag AwsSolutions checks; call ``.synth()`` on it.

    ``context`` overrides cdk.json's, like ``cdk synth -c key=value`` (which the CLI hands over
    in ``CDK_CONTEXT_JSON``; that still wins over both).
    """
    app = App(context={**cdk_json_context(), **dict(context or {})}, outdir=outdir)
    config = StackConfig.from_context(app.node.try_get_context)
    stack = ImageCaptioningStack(app, config.stack_name, config=config)
    Tags.of(stack).add("project", "image-captioning-pipeline")
    enable_nag(app)
    return app
