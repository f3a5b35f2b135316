"""SSM parameters under ``/<stack-name>/``: the stage tunables and the provisioned facts.

The tunables (model, prompt, inference settings, pacing, geometry) are read at run time through
Powertools parameters with a cache, so changing one takes effect without a redeploy. Their
defaults are the notebook's values, overridable at deploy time with ``cdk deploy -c <name>=...``.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.config import SSM_BUCKET_PARAM, SSM_DLQ_URL_PARAM, SSM_QUEUE_URL_PARAM, SSM_TUNABLES, StackConfig
from infra.nag import acknowledge

READ_ACTIONS = ("ssm:GetParametersByPath", "ssm:GetParameters", "ssm:GetParameter")


class Configuration(Construct):
    """One String parameter per tunable and fact; ``grant_read`` scoped to the prefix."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        bucket_name: str,
        queue_url: str,
        dlq_url: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self._prefix = config.ssm_prefix
        self.parameters: dict[str, ssm.StringParameter] = {}
        for name, (context_key, _) in SSM_TUNABLES.items():
            self._parameter(
                name, config.tunables[name], f"Tunable (deploy-time default: -c {context_key}=...)"
            )
        self._parameter(
            SSM_BUCKET_PARAM, bucket_name, "The pipeline bucket (the name the notebook series reads)"
        )
        self._parameter(SSM_QUEUE_URL_PARAM, queue_url, "The caption queue URL")
        self._parameter(SSM_DLQ_URL_PARAM, dlq_url, "The caption dead-letter queue URL")

    def _parameter(self, name: str, value: str, description: str) -> None:
        self.parameters[name] = ssm.StringParameter(
            self,
            name,
            parameter_name=f"{self._prefix}/{name}",
            string_value=value,
            description=description,
            tier=ssm.ParameterTier.STANDARD,
        )

    def grant_read(self, role: iam.Role) -> None:
        """GetParametersByPath on the prefix itself and Get/GetParameters below it; nothing else."""
        stack = Stack.of(self)
        prefix_name = self._prefix.lstrip("/")
        resources = [
            stack.format_arn(
                service="ssm",
                resource="parameter",
                resource_name=name,
                arn_format=ArnFormat.SLASH_RESOURCE_NAME,
            )
            for name in (prefix_name, f"{prefix_name}/*")
        ]
        role.add_to_principal_policy(iam.PolicyStatement(actions=list(READ_ACTIONS), resources=resources))
        acknowledge(
            role,
            "IAM5",
            f"Read access is scoped to the stack's own SSM path {self._prefix}/; the wildcard stands "
            "for the parameter names below it, read together with GetParametersByPath.",
            finding=f"Resource::arn:<AWS::Partition>:ssm:<AWS::Region>:<AWS::AccountId>:parameter{self._prefix}/*",
        )
