"""Search stage: caption writes -> index queue -> index function (Bedrock embeddings) -> S3 Vectors.

- An S3 Vectors vector bucket and one index (``CfnVectorBucket`` / ``CfnIndex``, float32, the
  embeddings model's dimension, cosine by default) with the non-filterable metadata keys declared.
- S3 notifications to an encrypted queue (with its own DLQ): ObjectCreated and ObjectRemoved under
  ``captions/``, ObjectRemoved under ``images/``. The resize trigger (ObjectCreated under
  ``images/``) is a different event type on that prefix, so the configurations do not overlap.
- The index function reads captions (and HEADs the upload, reads the encoded copy for image
  input) and writes nothing to the bucket: no write of this stage can reach any notification, so
  it cannot loop, and the caption stage never waits on it (its failures end in the index DLQ).
- Least privilege: ``s3vectors:PutVectors``/``DeleteVectors`` on this index's ARN only,
  ``bedrock:InvokeModel`` on the embeddings model only, object reads on the prefixes it reads.
- SSM facts under ``/<stack>/`` and stack outputs with the index's coordinates.
"""

from __future__ import annotations

from aws_cdk import CfnResource, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_s3vectors as s3vectors
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.config import (
    CAPTIONS_PREFIX,
    ENCODED_PREFIX,
    IMAGES_PREFIX,
    StackConfig,
    bedrock_invoke_resources,
)
from infra.constructs.function import PipelineFunction
from infra.constructs.storage import Storage
from lambdas.shared import contract

WRITE_ACTIONS = ("s3vectors:PutVectors", "s3vectors:DeleteVectors")
# What `imgcap search` / `imgcap status` need (README: the read-only searcher's policy).
SEARCH_READ_ACTIONS = ("s3vectors:QueryVectors", "s3vectors:GetVectors", "s3vectors:ListVectors")


class SearchStage(Construct):
    """``vector_bucket``, ``index``, ``queue`` + ``dead_letter_queue``, ``function``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        storage: Storage,
        code: lambda_.Code,
        layer: lambda_.ILayerVersion,
    ) -> None:
        super().__init__(scope, construct_id)
        search = config.search
        self.vector_bucket_name = search.vector_bucket_name(config.stack_name)
        self.index_name = search.index_name
        self.vector_bucket = s3vectors.CfnVectorBucket(
            self, "VectorBucket", vector_bucket_name=self.vector_bucket_name
        )
        self.index = s3vectors.CfnIndex(
            self,
            "VectorIndex",
            vector_bucket_arn=self.vector_bucket.attr_vector_bucket_arn,
            index_name=search.index_name,
            data_type="float32",
            dimension=search.embedding_dimension,
            distance_metric=search.distance_metric,
            metadata_configuration=s3vectors.CfnIndex.MetadataConfigurationProperty(
                non_filterable_metadata_keys=list(contract.NON_FILTERABLE_METADATA_KEYS)
            ),
        )
        self.dead_letter_queue, self.queue = self._queues(config)
        self._notifications(storage.bucket)
        pipeline_function = PipelineFunction(
            self,
            "Index",
            config=config,
            handler=contract.INDEX_HANDLER,
            service=contract.INDEX_SERVICE,
            description="Embed new captions (Amazon Bedrock) into the S3 Vectors index; delete removed ones",
            code=code,
            layer=layer,
            memory_mb=search.memory_mb,
            timeout_s=search.timeout_s,
            environment=contract.index_environment(
                bucket=storage.bucket.bucket_name,
                ssm_prefix=config.ssm_prefix,
                ssm_max_age_s=config.ssm_max_age_s,
                log_level=config.log_level,
                max_concurrency=search.max_concurrency,
                vector_bucket=self.vector_bucket_name,
                index_name=search.index_name,
                embedding_model_id=search.embedding_model_id,
                embedding_dimension=search.embedding_dimension,
                embedding_input=search.embedding_input,
                knobs=search.knobs,
            ),
        )
        self.function = pipeline_function.function
        self.log_group = pipeline_function.log_group
        role = pipeline_function.role
        # Reads the caption; HEADs the upload (still there, same version?); reads the encoded copy
        # when the vector embeds the image. Writes nothing to the bucket.
        storage.grant_objects(role, read=[CAPTIONS_PREFIX, IMAGES_PREFIX, ENCODED_PREFIX])
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=list(WRITE_ACTIONS), resources=[self.index.attr_index_arn])
        )
        self._grant_embeddings(role, search.embedding_model_id)
        self.function.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=search.batch_size,
                max_batching_window=Duration.seconds(search.batching_window_s),
                report_batch_item_failures=True,
                max_concurrency=search.max_concurrency,
            )
        )
        self._facts(config)

    def alarm_to(self, topic: sns.ITopic, config: StackConfig) -> cloudwatch.Alarm:
        """Anything in the index DLQ: embeddings or S3 Vectors kept failing; fix, then `imgcap reindex`."""
        alarm = cloudwatch.Alarm(
            self,
            "DeadLetterAlarm",
            alarm_name=f"{config.stack_name}-index-dlq-not-empty",
            alarm_description=(
                "Index messages reached the index DLQ (embeddings throttled or failing, or S3 Vectors "
                "refusing writes, for 8 receives). Captions are unaffected; fix the cause (imgcap "
                "status, the index function's logs), then run `imgcap reindex`."
            ),
            metric=self.dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(config.alarm_period_minutes), statistic="Maximum"
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            datapoints_to_alarm=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(topic))
        return alarm

    def _queues(self, config: StackConfig) -> tuple[sqs.Queue, sqs.Queue]:
        search = config.search
        dlq = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(config.dlq_retention_days),
        )
        queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(search.queue_visibility_timeout_s),
            retention_period=Duration.days(config.queue_retention_days),
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=search.max_receive_count, queue=dlq),
        )
        return dlq, queue

    def _notifications(self, bucket: s3.Bucket) -> None:
        destination = s3n.SqsDestination(self.queue)
        for event, prefix in (
            (s3.EventType.OBJECT_CREATED, CAPTIONS_PREFIX),
            (s3.EventType.OBJECT_REMOVED, CAPTIONS_PREFIX),
            (s3.EventType.OBJECT_REMOVED, IMAGES_PREFIX),
        ):
            bucket.add_event_notification(event, destination, s3.NotificationKeyFilter(prefix=prefix))
        # aws-cdk-lib makes the notification configuration DependsOn the queue (and its policy, so S3
        # may send to it) while it also references the queue's ARN: the queue half is redundant
        # (cfn-lint W3005), harmless, and generated by aws-cdk-lib.
        notifications = bucket.node.find_child("Notifications").node.default_child
        if not isinstance(notifications, CfnResource):
            raise TypeError("aws-cdk-lib no longer keeps the bucket notifications as one resource")
        notifications.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})

    def _grant_embeddings(self, role: iam.Role, model_id: str) -> None:
        stack = Stack.of(self)
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["bedrock:InvokeModel"],
                resources=bedrock_invoke_resources(
                    model_id, partition=stack.partition, region=stack.region, account=stack.account
                ),
            )
        )

    def _facts(self, config: StackConfig) -> None:
        search = config.search
        for name, value, description in (
            (contract.SSM_INDEX_NAME_PARAM, search.index_name, "S3 Vectors index of the captions"),
            (contract.SSM_VECTOR_BUCKET_PARAM, self.vector_bucket_name, "S3 Vectors vector bucket"),
            (contract.SSM_EMBEDDING_MODEL_PARAM, search.embedding_model_id, "Embeddings model of the index"),
            (contract.SSM_EMBEDDING_DIMENSION_PARAM, str(search.embedding_dimension), "Index dimension"),
            (contract.SSM_EMBEDDING_INPUT_PARAM, search.embedding_input, "What a vector embeds"),
            (contract.SSM_DISTANCE_METRIC_PARAM, search.distance_metric, "Index distance metric"),
            (contract.SSM_INDEX_QUEUE_URL_PARAM, self.queue.queue_url, "Index queue (imgcap reindex)"),
            (contract.SSM_INDEX_DLQ_URL_PARAM, self.dead_letter_queue.queue_url, "Index dead-letter queue"),
        ):
            ssm.StringParameter(
                self,
                f"Param-{name}",
                parameter_name=f"{config.ssm_prefix}/{name}",
                string_value=value,
                description=description,
                tier=ssm.ParameterTier.STANDARD,
            )
