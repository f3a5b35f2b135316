"""The pipeline bucket, its server-access-log bucket, and prefix-scoped object grants.

Layout (docs/contracts.md): ``images/`` uploads, ``base64_images/`` encoded PNGs, ``captions/``,
``errors/`` and short-lived ``claims/`` (expired by lifecycle after a day).
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import ABORT_MULTIPART_DAYS, CLAIMS_EXPIRE_DAYS, CLAIMS_PREFIX, StackConfig
from infra.constructs.function import ignore_redundant_depends_on
from infra.nag import acknowledge

ACCESS_LOG_RETENTION_DAYS = 365
# Construct id of the singleton provider aws-cdk-lib adds for auto_delete_objects.
AUTO_DELETE_PROVIDER_ID = "Custom::S3AutoDeleteObjectsCustomResourceProvider"


class Storage(Construct):
    """``bucket`` (the pipeline's data) and ``access_logs`` (its server access logs)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig) -> None:
        super().__init__(scope, construct_id)
        self._removal = RemovalPolicy.DESTROY if config.destroy_on_removal else RemovalPolicy.RETAIN
        self._auto_delete = config.destroy_on_removal
        self.access_logs = self._access_log_bucket()
        self.bucket = self._data_bucket()
        if self._auto_delete:
            provider = Stack.of(self).node.find_child(AUTO_DELETE_PROVIDER_ID)
            ignore_redundant_depends_on(provider.node.find_child("Handler"))

    def _access_log_bucket(self) -> s3.Bucket:
        return s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            # Server access log delivery supports SSE-S3 only (not SSE-KMS) on the target bucket.
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            # Log delivery is authorised by a bucket policy (feature flag
            # serverAccessLogsUseBucketPolicy), so ACLs can stay disabled.
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=Duration.days(ACCESS_LOG_RETENTION_DAYS),
                    abort_incomplete_multipart_upload_after=Duration.days(ABORT_MULTIPART_DAYS),
                )
            ],
            removal_policy=self._removal,
            auto_delete_objects=self._auto_delete,
        )

    def _data_bucket(self) -> s3.Bucket:
        return s3.Bucket(
            self,
            "Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=False,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="pipeline-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-multipart-uploads",
                    abort_incomplete_multipart_upload_after=Duration.days(ABORT_MULTIPART_DAYS),
                ),
                s3.LifecycleRule(
                    id="expire-claims",
                    prefix=CLAIMS_PREFIX,
                    expiration=Duration.days(CLAIMS_EXPIRE_DAYS),
                ),
            ],
            removal_policy=self._removal,
            auto_delete_objects=self._auto_delete,
        )

    def grant_objects(
        self,
        role: iam.Role,
        *,
        read: Sequence[str] = (),
        write: Sequence[str] = (),
        delete: Sequence[str] = (),
    ) -> None:
        """Allow GetObject/PutObject/DeleteObject on ``<prefix>*`` only, plus s3:ListBucket.

        Explicit statements rather than ``bucket.grant_read``: those add action wildcards
        (``s3:GetObject*``, ``s3:List*``, ``s3:GetBucket*``) the functions never use.

        s3:ListBucket (on the bucket, no object access) is what makes a HEAD/GET of a missing
        key answer 404 instead of 403; the handlers rely on 404 for "not there". It is granted
        without an ``s3:prefix`` condition on purpose: S3 documents the 404 for a caller that has
        s3:ListBucket on the bucket, and does not document that a grant conditioned on
        ``s3:prefix`` (a key of list requests) counts for a HEAD/GET; a 403 there would turn
        "missing" into a retried failure. Listing reveals key names only, never object data.
        """
        for action, prefixes in (
            ("s3:GetObject", read),
            ("s3:PutObject", write),
            ("s3:DeleteObject", delete),
        ):
            if not prefixes:
                continue
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=[action],
                    resources=[self.bucket.arn_for_objects(f"{prefix}*") for prefix in prefixes],
                )
            )
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn])
        )
        bucket_arn = self._nag_arn()
        for prefix in sorted({*read, *write, *delete}):
            acknowledge(
                role,
                "IAM5",
                f"Object access is scoped to the '{prefix}' prefix of the pipeline bucket; the "
                "wildcard stands for the object keys below that prefix, which are not known in advance.",
                finding=f"Resource::{bucket_arn}/{prefix}*",
            )

    def _nag_arn(self) -> str:
        """The bucket ARN as cdk-nag prints it in a finding: ``<LogicalId.Arn>``."""
        stack = Stack.of(self)
        cfn_bucket = self.bucket.node.default_child
        logical_id = stack.resolve(stack.get_logical_id(cfn_bucket))  # type: ignore[arg-type]
        return f"<{logical_id}.Arn>"
