"""The stack: wires the constructs together and publishes the stable outputs. No logic of its own."""

from __future__ import annotations

from typing import Any

from aws_cdk import Annotations, CfnOutput, Stack
from constructs import Construct

from infra.config import IMAGES_PREFIX, StackConfig
from infra.constructs.backfill_stage import BackfillStage
from infra.constructs.caption_stage import CaptionStage
from infra.constructs.configuration import Configuration
from infra.constructs.layer import DependenciesLayer, function_code
from infra.constructs.monitoring import Monitoring
from infra.constructs.queues import CaptionQueues
from infra.constructs.resize_stage import ResizeStage
from infra.constructs.search_stage import SearchStage
from infra.constructs.storage import Storage
from lambdas.shared import contract

# CfnOutput ids are part of the interface: the operator CLI and the tests read them back.
OUTPUT_IDS = contract.OUTPUT_IDS


class ImageCaptioningStack(Stack):
    """S3 upload -> resize/encode -> SQS -> caption (Bedrock) -> S3, with monitoring."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig, **kwargs: Any) -> None:
        super().__init__(
            scope,
            construct_id,
            stack_name=config.stack_name,
            description="Serverless image captioning: S3 -> resize/encode -> SQS -> Amazon Bedrock -> S3",
            **kwargs,
        )
        for number, warning in enumerate(config.warnings):
            Annotations.of(self).add_warning_v2(f"imgcap:config-warning-{number}", warning)
        storage = Storage(self, "Storage", config=config)
        queues = CaptionQueues(self, "CaptionQueues", config=config)
        configuration = Configuration(
            self,
            "Configuration",
            config=config,
            bucket_name=storage.bucket.bucket_name,
            queue_url=queues.queue.queue_url,
            dlq_url=queues.dead_letter_queue.queue_url,
        )
        layer = DependenciesLayer(self, "Dependencies").layer
        code = function_code()
        stage_inputs: dict[str, Any] = {
            "config": config,
            "storage": storage,
            "queue": queues.queue,
            "configuration": configuration,
            "code": code,
            "layer": layer,
        }
        resize = ResizeStage(self, "ResizeStage", **stage_inputs)
        caption = CaptionStage(self, "CaptionStage", **stage_inputs)
        backfill = BackfillStage(self, "BackfillStage", **stage_inputs)
        monitoring = Monitoring(
            self, "Monitoring", config=config, queues=queues, resize=resize, caption=caption
        )
        backfill.add_alarms(config, monitoring.topic)
        backfill.add_widgets(config, monitoring.dashboard)

        outputs = {
            contract.OUTPUT_BUCKET: (
                storage.bucket.bucket_name,
                "Upload images under s3://<this bucket>/images/",
            ),
            contract.OUTPUT_UPLOAD_PREFIX: (IMAGES_PREFIX, "The only prefix that triggers the pipeline"),
            contract.OUTPUT_QUEUE_URL: (queues.queue.queue_url, "Caption queue"),
            contract.OUTPUT_DLQ_URL: (
                queues.dead_letter_queue.queue_url,
                "Caption messages that kept failing",
            ),
            contract.OUTPUT_SSM_PREFIX: (config.ssm_prefix, "SSM path of the tunables and provisioned facts"),
            contract.OUTPUT_DASHBOARD: (monitoring.dashboard.dashboard_name, "CloudWatch dashboard"),
            contract.OUTPUT_ALARM_TOPIC: (monitoring.topic.topic_arn, "SNS topic the alarms notify"),
            contract.OUTPUT_RESIZE_FUNCTION: (resize.function.function_name, "Resize/encode function"),
            contract.OUTPUT_CAPTION_FUNCTION: (caption.function.function_name, "Caption function"),
            contract.OUTPUT_RESIZE_FAILURE_QUEUE: (
                resize.failure_queue.queue_url,
                "Upload events that failed all retries",
            ),
        }
        for output_id in OUTPUT_IDS:
            value, description = outputs[output_id]
            CfnOutput(self, output_id, value=value, description=description)
        if config.search.enabled:  # -c search=false: no index, queue, function, parameters or outputs
            self._search(config, storage, code, layer, monitoring.topic)

    def _search(self, config: StackConfig, storage: Storage, code: Any, layer: Any, topic: Any) -> None:
        search = SearchStage(self, "SearchStage", config=config, storage=storage, code=code, layer=layer)
        search.alarm_to(topic, config)
        outputs = {
            contract.OUTPUT_VECTOR_BUCKET: (search.vector_bucket_name, "S3 Vectors vector bucket"),
            contract.OUTPUT_INDEX_NAME: (search.index_name, "S3 Vectors index (one vector per image)"),
            contract.OUTPUT_INDEX_ARN: (search.index.attr_index_arn, "Index ARN (IAM policies)"),
            contract.OUTPUT_EMBEDDING_MODEL: (config.search.embedding_model_id, "Embeddings model"),
            contract.OUTPUT_INDEX_QUEUE_URL: (search.queue.queue_url, "Index queue"),
            contract.OUTPUT_INDEX_DLQ_URL: (
                search.dead_letter_queue.queue_url,
                "Index messages that kept failing",
            ),
            contract.OUTPUT_INDEX_FUNCTION: (search.function.function_name, "Index function"),
        }
        for output_id in contract.SEARCH_OUTPUT_IDS:
            value, description = outputs[output_id]
            CfnOutput(self, output_id, value=value, description=description)
