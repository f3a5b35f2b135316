"""Caption stage: caption queue -> function (Bedrock Converse) -> ``captions/``.

The event source mapping delivers small batches, reports partial batch failures (a throttled
message goes back to the queue with a backed-off visibility timeout instead of sleeping in
Lambda) and caps parallel workers with ``max_concurrency``; no reserved concurrency, which alone
would make the poller throttle and push good messages to the DLQ. ``MAX_CONCURRENCY`` gives the
function the same C so each worker paces itself at requests-per-minute / C.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import (
    CAPTION_HANDLER,
    CAPTION_SERVICE,
    CAPTIONS_PREFIX,
    CLAIMS_PREFIX,
    ENCODED_PREFIX,
    ERRORS_PREFIX,
    HEALTH_PREFIX,
    IMAGES_PREFIX,
    StackConfig,
    bedrock_invoke_resources_for,
)
from infra.constructs.configuration import Configuration
from infra.constructs.function import PipelineFunction
from infra.constructs.storage import Storage
from lambdas.shared.contract import BATCH_JOBS_PREFIX, caption_environment


class CaptionStage(Construct):
    """``function`` fed by ``queue`` through an SQS event source."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        storage: Storage,
        queue: sqs.IQueue,
        configuration: Configuration,
        code: lambda_.Code,
        layer: lambda_.ILayerVersion,
    ) -> None:
        super().__init__(scope, construct_id)
        pipeline_function = PipelineFunction(
            self,
            "Caption",
            config=config,
            handler=CAPTION_HANDLER,
            service=CAPTION_SERVICE,
            description="Caption an encoded image with Amazon Bedrock (Converse), paced to the quota share",
            code=code,
            layer=layer,
            memory_mb=config.caption_memory_mb,
            timeout_s=config.caption_timeout_s,
            environment=caption_environment(
                bucket=storage.bucket.bucket_name,
                ssm_prefix=config.ssm_prefix,
                ssm_max_age_s=config.ssm_max_age_s,
                log_level=config.log_level,
                max_concurrency=config.max_concurrency,
                knobs=config.caption,
                allowed_model_ids=config.allowed_models,
                write_object_tags=config.write_object_tags,
            ),
        )
        self.function = pipeline_function.function
        self.log_group = pipeline_function.log_group
        role = pipeline_function.role
        # Reads the encoded image; HEADs the upload (is this version still current?) and an existing
        # caption or final error record (dedupe); writes the caption or an error record; takes,
        # reads and releases the claim that makes the paid model call happen once; notes a
        # configuration fault in health/caption.json for `imgcap status`; reads a backfill job's
        # document (batch/jobs/) when a batch job holds the claim (the message can then finish).
        storage.grant_objects(
            role,
            read=[
                IMAGES_PREFIX,
                ENCODED_PREFIX,
                CAPTIONS_PREFIX,
                ERRORS_PREFIX,
                CLAIMS_PREFIX,
                BATCH_JOBS_PREFIX,
            ],
            write=[CAPTIONS_PREFIX, ERRORS_PREFIX, CLAIMS_PREFIX, HEALTH_PREFIX],
            delete=[CLAIMS_PREFIX],
        )
        configuration.grant_read(role)
        self._grant_bedrock(role, config.allowed_models)
        if config.write_object_tags:
            self._grant_object_tags(role, storage)
        self.function.add_event_source(
            sources.SqsEventSource(
                queue,
                batch_size=config.caption_batch_size,
                report_batch_item_failures=True,
                max_concurrency=config.max_concurrency,
            )
        )

    def _grant_bedrock(self, role: iam.Role, model_ids: tuple[str, ...]) -> None:
        """bedrock:InvokeModel (what Converse needs) on each allowed profile and the models it routes to.

        Exactly ``allowedModelIds``: the function refuses any other ``model-id`` at cold start.
        """
        stack = Stack.of(self)
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["bedrock:InvokeModel"],
                resources=bedrock_invoke_resources_for(
                    model_ids, partition=stack.partition, region=stack.region, account=stack.account
                ),
            )
        )

    @staticmethod
    def _grant_object_tags(role: iam.Role, storage: Storage) -> None:
        """``-c writeObjectTags=true``: read and replace the tag set of uploads, nothing else.

        The images/* IAM5 finding is already acknowledged by the object read grant above.
        """
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObjectTagging", "s3:PutObjectTagging"],
                resources=[storage.bucket.arn_for_objects(f"{IMAGES_PREFIX}*")],
            )
        )
