"""cdk-nag 3.x wiring: the AwsSolutions pack runs on every synth and any finding fails it.

Acknowledgements go through CDK's own ``Validations.of(construct).acknowledge`` (cdk-nag 3 dropped
``NagSuppressions``). Each one is scoped to the construct that owns the finding and, for rules
that report several findings per resource (IAM5), to the exact finding, e.g.
``AwsSolutions-IAM5[Resource::<Bucket.Arn>/images/*]``. The ids use the fully qualified form
``AwsSolutions::<rule>`` that the validation report prints, so every acknowledgement and its
reason is listed under ``suppressedViolations`` in ``cdk.out/validation-report.json``.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

PACK = "AwsSolutions"


def enable_nag(app: App) -> None:
    """Run the AwsSolutions rules on every stack of ``app`` at synth time."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))


def finding_id(rule: str, finding: str | None = None) -> str:
    """``("IAM5", "Resource::*")`` -> ``AwsSolutions::AwsSolutions-IAM5[Resource::*]``."""
    rule_id = f"{PACK}-{rule}" if finding is None else f"{PACK}-{rule}[{finding}]"
    return f"{PACK}::{rule_id}"


def acknowledge(scope: IConstruct, rule: str, reason: str, *, finding: str | None = None) -> None:
    """Acknowledge one AwsSolutions finding on ``scope`` with a reason that must be true."""
    if len(reason.strip()) < 20:
        raise ValueError(f"an acknowledgement of {rule} needs a real reason, got {reason!r}")
    Validations.of(scope).acknowledge(Acknowledgment(id=finding_id(rule, finding), reason=reason))
