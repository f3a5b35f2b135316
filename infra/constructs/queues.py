"""The caption queue and its dead-letter queue.

Encrypted (SQS-managed SSE) and SSL-only. The visibility timeout is a multiple (>= 6x) of the
caption function's timeout, as Lambda recommends for SQS event sources. ``maxReceiveCount`` is high
because a throttled message is handed back with a backed-off visibility timeout (up to 300 s)
many times before it is captioned; only a message that keeps failing reaches the DLQ, which
keeps it longer (14 days) than the queue (4 days) so nothing expires before someone looks.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import StackConfig


class CaptionQueues(Construct):
    """``queue`` (resize -> caption) and ``dead_letter_queue``."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(config.dlq_retention_days),
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(config.queue_visibility_timeout_s),
            retention_period=Duration.days(config.queue_retention_days),
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=config.max_receive_count,
                queue=self.dead_letter_queue,
            ),
        )
