"""The CDK app of the image captioning pipeline.

``build_app`` is the single synth path: ``app.py`` (what ``npx cdk synth`` runs) and the infra
tests both call it. ``infra`` never imports the Lambda code; it names handlers as strings.
"""

from infra.application import build_app

__all__ = ["build_app"]
