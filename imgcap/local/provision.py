"""Provision on the loopback servers what the CDK stack provisions in AWS.

Same names as the stack: bucket with the ``images/`` prefix-filtered ObjectCreated notification,
caption queue with a redrive policy to its DLQ, the SSM parameters under ``/<stack-name>/``.
Lambda's S3 trigger has no moto equivalent without Docker, so the notification targets a local
"s3-events" queue that the event-source emulator drains into the resize handler: the handler
receives the exact S3 event moto produced (URL-encoded keys included).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lambdas.shared import keys
from lambdas.shared.config import SSM_BUCKET_PARAM, SSM_DEFAULTS, SSM_DLQ_URL_PARAM, SSM_QUEUE_URL_PARAM


@dataclass(frozen=True, slots=True)
class LocalStack:
    stack_name: str
    bucket: str
    ssm_prefix: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    events_queue_url: str  # S3 notifications -> resize handler (stands in for the Lambda trigger)
    resize_failure_queue_url: str  # async on-failure destination of the resize function
    max_receive_count: int
    visibility_timeout_s: int


def stack_names(stack_name: str) -> dict[str, str]:
    base = stack_name.lower()
    return {
        "bucket": f"{base}-images",
        "queue": f"{stack_name}-caption",
        "dlq": f"{stack_name}-caption-dlq",
        "events": f"{stack_name}-s3-events",
        "resize_failures": f"{stack_name}-resize-failures",
    }


def create_queue(sqs: Any, name: str, attributes: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(URL, ARN) of a new queue (the stages' own and their notification targets)."""
    url = sqs.create_queue(QueueName=name, Attributes=dict(attributes or {}))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return str(url), str(arn)


def provision(
    *,
    s3: Any,
    sqs: Any,
    ssm: Any,
    stack_name: str,
    tunables: Mapping[str, str] | None = None,
    max_receive_count: int = 20,
    visibility_timeout_s: int = 720,
) -> LocalStack:
    """Create everything (idempotent for a fresh moto backend) and return the names."""
    names = stack_names(stack_name)
    s3.create_bucket(Bucket=names["bucket"])

    dlq_url, dlq_arn = create_queue(sqs, names["dlq"], {"MessageRetentionPeriod": str(14 * 24 * 3600)})
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
    queue_url, queue_arn = create_queue(
        sqs,
        names["queue"],
        {
            "VisibilityTimeout": str(visibility_timeout_s),
            "MessageRetentionPeriod": str(4 * 24 * 3600),
            "RedrivePolicy": redrive,
        },
    )
    events_url, events_arn = create_queue(sqs, names["events"])
    failures_url, _ = create_queue(sqs, names["resize_failures"])

    s3.put_bucket_notification_configuration(
        Bucket=names["bucket"],
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "resize-on-upload",
                    "QueueArn": events_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": keys.IMAGES_PREFIX}]}},
                }
            ]
        },
    )
    # S3 sends an s3:TestEvent when a notification is configured; drop it so the emulator starts clean.
    sqs.purge_queue(QueueUrl=events_url)

    prefix = f"/{stack_name}"
    values = dict(SSM_DEFAULTS)
    values.update({k: str(v) for k, v in (tunables or {}).items()})
    values[SSM_BUCKET_PARAM] = names["bucket"]
    values[SSM_QUEUE_URL_PARAM] = queue_url
    values[SSM_DLQ_URL_PARAM] = dlq_url
    for name, value in values.items():
        ssm.put_parameter(Name=f"{prefix}/{name}", Value=value, Type="String", Overwrite=True)

    return LocalStack(
        stack_name=stack_name,
        bucket=names["bucket"],
        ssm_prefix=prefix,
        queue_url=queue_url,
        queue_arn=queue_arn,
        dlq_url=dlq_url,
        events_queue_url=events_url,
        resize_failure_queue_url=failures_url,
        max_receive_count=max_receive_count,
        visibility_timeout_s=visibility_timeout_s,
    )


def drop_test_events(sqs: Any, url: str) -> None:
    """Drop the s3:TestEvent S3 sends when a notification is configured (PurgeQueue: once a minute)."""
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            return
        for message in messages:
            if "s3:TestEvent" in message.get("Body", ""):
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            else:  # not ours to drop: make it visible again
                sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
                return


def add_queue_notifications(s3: Any, bucket: str, configurations: list[dict[str, Any]]) -> None:
    """Add S3 -> SQS notification configurations to the bucket's (its own stay as they are)."""
    config = s3.get_bucket_notification_configuration(Bucket=bucket)
    config.pop("ResponseMetadata", None)
    config["QueueConfigurations"] = [*config.get("QueueConfigurations", []), *configurations]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
