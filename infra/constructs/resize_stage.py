"""Resize/encode stage: S3 ObjectCreated under ``images/`` -> function -> caption queue.

The notification is filtered to the ``images/`` prefix, so the stage's own outputs (under
``base64_images/``, ``captions/``, ``errors/``, ``claims/``) can never trigger it. S3 invokes the
function asynchronously: Lambda retries a failed event twice, keeps it up to 6 hours, and then
hands it to an encrypted "resize failures" queue (kept 14 days) instead of dropping it.

A burst of uploads cannot take the account's Lambda concurrency: the function has a reserved
concurrency (``-c resizeReservedConcurrency``, default 20). Events beyond it are throttled, and
Lambda keeps throttled asynchronous events in its own queue and retries them for up to the
maximum event age (6 hours) before the failure queue; throttles do not use up the 2 retries.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import (
    ENCODED_PREFIX,
    ERRORS_PREFIX,
    IMAGES_PREFIX,
    RESIZE_HANDLER,
    RESIZE_SERVICE,
    StackConfig,
)
from infra.constructs.configuration import Configuration
from infra.constructs.function import PipelineFunction, ignore_redundant_depends_on
from infra.constructs.storage import Storage
from infra.nag import acknowledge
from lambdas.shared.contract import resize_environment

FAILURE_RETENTION_DAYS = 14
# Construct id of the singleton function aws-cdk-lib adds for S3 bucket notifications.
NOTIFICATIONS_HANDLER_ID = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"


class ResizeStage(Construct):
    """``function`` and ``failure_queue`` (async invocations that ran out of retries)."""

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
        self.failure_queue = self._failure_queue()
        pipeline_function = PipelineFunction(
            self,
            "Resize",
            config=config,
            handler=RESIZE_HANDLER,
            service=RESIZE_SERVICE,
            description="Resize an upload under images/, store it base64-encoded, queue it for captioning",
            code=code,
            layer=layer,
            memory_mb=config.resize_memory_mb,
            timeout_s=config.resize_timeout_s,
            environment=resize_environment(
                bucket=storage.bucket.bucket_name,
                queue_url=queue.queue_url,
                ssm_prefix=config.ssm_prefix,
                ssm_max_age_s=config.ssm_max_age_s,
                log_level=config.log_level,
            ),
            async_retry_attempts=config.resize_retry_attempts,
            async_max_event_age=Duration.hours(config.resize_max_event_age_hours),
            async_on_failure=destinations.SqsDestination(self.failure_queue),
            reserved_concurrency=config.resize_reserved_concurrency,
        )
        self.function = pipeline_function.function
        self.log_group = pipeline_function.log_group
        role = pipeline_function.role
        # Reads the upload; HEADs its own output (idempotency); writes output and error records;
        # deletes an older rejection record once a re-upload of the same key succeeds.
        storage.grant_objects(
            role,
            read=[IMAGES_PREFIX, ENCODED_PREFIX],
            write=[ENCODED_PREFIX, ERRORS_PREFIX],
            delete=[ERRORS_PREFIX],
        )
        queue.grant_send_messages(role)
        configuration.grant_read(role)
        storage.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(self.function),
            s3.NotificationKeyFilter(prefix=IMAGES_PREFIX),
        )
        self._acknowledge_notification_handler()

    def _acknowledge_notification_handler(self) -> None:
        """The S3 notification is configured by a singleton function that aws-cdk-lib provides."""
        handler = Stack.of(self).node.try_find_child(NOTIFICATIONS_HANDLER_ID)
        if handler is None:
            raise RuntimeError(
                f"aws-cdk-lib no longer creates {NOTIFICATIONS_HANDLER_ID}; review its nag findings"
            )
        ignore_redundant_depends_on(handler.node.find_child("Resource"))
        acknowledge(
            handler,
            "IAM4",
            "aws-cdk-lib's BucketNotificationsHandler (it writes the bucket's notification "
            "configuration at deploy time) uses AWSLambdaBasicExecutionRole only to write its own logs.",
            finding="Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        )

    def _failure_queue(self) -> sqs.Queue:
        queue = sqs.Queue(
            self,
            "FailureQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(FAILURE_RETENTION_DAYS),
        )
        acknowledge(
            queue,
            "SQS3",
            "This queue is itself the terminal failure destination of the resize function's "
            "asynchronous invocations (a dead-letter store); nothing consumes it automatically, "
            "so a further DLQ behind it would never receive anything.",
        )
        return queue
