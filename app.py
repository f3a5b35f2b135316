#!/usr/bin/env python3
"""CDK entry point (cdk.json "app"). Everything is built by ``infra.build_app``, which the tests use too."""

import os

# jsii starts Node when aws_cdk is imported; on Node 20 it prints an end-of-life banner unless told
# not to. Purely cosmetic: set before the import below so `npx cdk synth` output stays readable.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from infra import build_app  # after the environment tweak above

build_app().synth()
