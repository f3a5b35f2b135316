"""Dashboard, alarms (to a KMS-encrypted SNS topic) and saved Logs Insights queries.

Built with cdk-monitoring-constructs (``MonitoringFacade``), a maintained library: it supplies the
standard Lambda (invocations, errors, throttles, duration, concurrency) and SQS (depth, age of
oldest message, DLQ) widgets and alarms with consistent names and annotations, and takes our own
custom-metric groups (EMF metrics from Powertools, metric math, a SEARCH expression) and alarms
through ``monitor_custom``. Everything it emits is plain CloudWatch (dashboard + alarms), which
passes cdk-nag and cfn-lint. Hand-rolled widgets would only repeat what it already renders.

Custom metrics: namespace ``ImageCaptioning``, dimension ``service`` (``resize-encode`` or
``caption``); ``ImagesRejected`` also has ``ErrorCode``, shown with a SEARCH expression so a new
code appears on the dashboard without a redeploy.

The saved queries read the keys both handlers add to their Powertools JSON log lines:
``source_key``, ``error_code``, ``outcome``, ``detail`` and, in the caption stage, ``latency_ms``,
``pacing_wait_ms`` and ``receive_count`` (Powertools drops keys whose value is None).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from cdk_monitoring_constructs import (
    AlarmFactoryDefaults,
    CustomMetricGroup,
    CustomMetricWithAlarm,
    CustomThreshold,
    DefaultDashboardFactory,
    ErrorCountThreshold,
    MaxMessageAgeThreshold,
    MaxMessageCountThreshold,
    MetricFactoryDefaults,
    MonitoringFacade,
    SnsAlarmActionStrategy,
)
from constructs import Construct

from infra.config import CAPTION_SERVICE, METRICS_NAMESPACE, RESIZE_SERVICE, StackConfig
from infra.constructs.caption_stage import CaptionStage
from infra.constructs.queues import CaptionQueues
from infra.constructs.resize_stage import ResizeStage
from lambdas.shared.contract import ERROR_CODE_DIMENSION, SHORTFALL_THRESHOLD, Metric

# Key actions, enumerated: the key policy holds no action wildcard. The account keeps every
# administrative action (including PutKeyPolicy, so the key can never become unmanageable).
_KEY_ADMIN_ACTIONS = (
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:RetireGrant",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
)
# What a publisher to an SSE-KMS topic needs (CloudWatch alarms publish as cloudwatch.amazonaws.com).
_PUBLISHER_KEY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")

_LOG_QUERY_WHY_FAILED = """\
fields @timestamp, service, level, source_key, error_code, outcome, detail, message, @logStream
| filter level in ["WARNING", "ERROR", "CRITICAL"] or ispresent(error_code)
# narrow to one image, e.g.: | filter source_key = "images/trips/a b.jpg"
| sort @timestamp desc
| limit 200"""

_LOG_QUERY_FAILURES_BY_CODE = """\
fields @timestamp, service, source_key, error_code, message
| filter ispresent(error_code) and error_code != ""
| stats count(*) as failures, latest(source_key) as example_key by service, error_code
| sort failures desc"""

_LOG_QUERY_SLOWEST_CAPTIONS = """\
fields @timestamp, source_key, latency_ms, pacing_wait_ms, receive_count, outcome, @requestId
| filter ispresent(latency_ms)
| sort latency_ms desc
| limit 50"""


def _decimal(value: float) -> str:
    """A price as plain decimal text for a metric math expression (never scientific notation)."""
    return format(Decimal(str(value)), "f")


class Monitoring(Construct):
    """``topic`` (alarm notifications), ``dashboard`` and the saved ``queries``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        queues: CaptionQueues,
        resize: ResizeStage,
        caption: CaptionStage,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self._period = Duration.minutes(config.alarm_period_minutes)
        self.key = self._alarm_key()
        self.topic = self._alarm_topic()
        dashboards = DefaultDashboardFactory(
            self,
            "Dashboards",
            dashboard_name_prefix=config.dashboard_name,
            create_dashboard=True,
            create_summary_dashboard=False,
            create_alarm_dashboard=False,
            detail_dashboard_range=Duration.hours(8),
        )
        facade = MonitoringFacade(
            self,
            "Facade",
            alarm_factory_defaults=AlarmFactoryDefaults(
                actions_enabled=True,
                alarm_name_prefix=config.stack_name,
                # One breaching 5-minute datapoint is enough for "not empty" / "errors" / "too old";
                # the throttling alarm asks for N consecutive periods itself.
                evaluation_periods=1,
                datapoints_to_alarm=1,
                action=SnsAlarmActionStrategy(on_alarm_topic=self.topic),
            ),
            metric_factory_defaults=MetricFactoryDefaults(namespace=METRICS_NAMESPACE, period=self._period),
            dashboard_factory=dashboards,
        )
        self._pipeline_metrics(facade)
        self._queues(facade, queues, resize.failure_queue)
        self._functions(facade, resize, caption)
        dashboard = dashboards.created_dashboard()
        if dashboard is None:  # pragma: no cover - create_dashboard=True above
            raise RuntimeError("cdk-monitoring-constructs did not create the dashboard")
        self.dashboard = dashboard
        self.queries = self._saved_queries(resize.log_group, caption.log_group)

    # -- alarm destination -------------------------------------------------------------------

    def _alarm_key(self) -> kms.Key:
        policy = iam.PolicyDocument(
            statements=[
                iam.PolicyStatement(
                    sid="AccountAdministersAndUsesKey",
                    principals=[iam.AccountRootPrincipal()],
                    actions=list(_KEY_ADMIN_ACTIONS),
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="CloudWatchAlarmsPublishToEncryptedTopic",
                    principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                    actions=list(_PUBLISHER_KEY_ACTIONS),
                    resources=["*"],
                    conditions=self._from_this_accounts_alarms(),
                ),
            ]
        )
        return kms.Key(
            self,
            "AlarmTopicKey",
            description=f"{self._config.stack_name}: encrypts the alarm notification topic",
            enable_key_rotation=True,
            policy=policy,
            removal_policy=self._removal_policy(),
        )

    def _from_this_accounts_alarms(self) -> dict[str, Any]:
        """Confused-deputy guard: the CloudWatch service acts only for alarms of this account/region."""
        stack = Stack.of(self)
        return {
            "StringEquals": {"aws:SourceAccount": stack.account},
            "ArnLike": {
                "aws:SourceArn": stack.format_arn(
                    service="cloudwatch",
                    resource="alarm",
                    resource_name="*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                )
            },
        }

    def _removal_policy(self) -> RemovalPolicy:
        return RemovalPolicy.DESTROY if self._config.destroy_on_removal else RemovalPolicy.RETAIN

    def _alarm_topic(self) -> sns.Topic:
        topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"{self._config.stack_name} pipeline alarms",
            master_key=self.key,
            enforce_ssl=True,
        )
        # The topic policy CDK writes (for enforce_ssl) replaces SNS's default one, so allow the
        # alarms of this account to publish explicitly.
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsOfThisAccountPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions=self._from_this_accounts_alarms(),
            )
        )
        if self._config.alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(self._config.alarm_email))
        return topic

    # -- dashboard + alarms ------------------------------------------------------------------

    def _metric(
        self, name: str, service: str, statistic: str = "Sum", label: str | None = None
    ) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=name,
            dimensions_map={"service": service},
            statistic=statistic,
            period=self._period,
            label=label or name,
        )

    def _pipeline_metrics(self, facade: MonitoringFacade) -> None:
        config = self._config
        facade.add_large_header("Image captioning pipeline")
        input_tokens = self._metric(Metric.INPUT_TOKENS, CAPTION_SERVICE)
        output_tokens = self._metric(Metric.OUTPUT_TOKENS, CAPTION_SERVICE)
        cost_per_hour = cloudwatch.MathExpression(
            expression=(
                f"(inTok / 1000 * {_decimal(config.input_price_per_1k)}"
                f" + outTok / 1000 * {_decimal(config.output_price_per_1k)}) * 3600 / PERIOD(inTok)"
            ),
            using_metrics={"inTok": input_tokens, "outTok": output_tokens},
            label="Estimated model cost (USD per hour, list price)",
            period=self._period,
        )
        rejected_by_reason = cloudwatch.MathExpression(
            expression=(
                f"SEARCH('{{{METRICS_NAMESPACE},{ERROR_CODE_DIMENSION},service}} "
                f'MetricName="{Metric.IMAGES_REJECTED}"\', '
                f"'Sum', {int(self._period.to_seconds())})"
            ),
            using_metrics={},
            label="",
            period=self._period,
        )
        throttles = CustomMetricWithAlarm(
            metric=self._metric(Metric.MODEL_THROTTLES, CAPTION_SERVICE),
            alarm_friendly_name=Metric.MODEL_THROTTLES,
            add_alarm={
                "Sustained": CustomThreshold(
                    threshold=config.throttle_alarm_threshold,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    evaluation_periods=config.throttle_alarm_periods,
                    datapoints_to_alarm=config.throttle_alarm_periods,
                    treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING,
                    alarm_description_override=(
                        f"Bedrock throttled at least {config.throttle_alarm_threshold} calls in each of "
                        f"{config.throttle_alarm_periods} consecutive {config.alarm_period_minutes}-minute "
                        "periods: requests-per-minute in SSM is above the account quota."
                    ),
                )
            },
        )
        configuration_errors = CustomMetricWithAlarm(
            metric=self._metric(Metric.MODEL_CONFIGURATION_ERRORS, CAPTION_SERVICE),
            alarm_friendly_name=Metric.MODEL_CONFIGURATION_ERRORS,
            add_alarm={
                "Any": CustomThreshold(
                    threshold=1,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    evaluation_periods=1,
                    datapoints_to_alarm=1,
                    treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING,
                    alarm_description_override=(
                        "Bedrock refused caption calls for a reason of configuration (access denied, "
                        "model not found or not enabled, a parameter the model refuses). The images "
                        "wait in the queue (then the DLQ); fix model access or the SSM model-id and "
                        "run `imgcap redrive`. `imgcap status` names the error."
                    ),
                )
            },
        )
        shortfall = CustomMetricWithAlarm(
            metric=self._metric(Metric.CAPACITY_SHORTFALL, CAPTION_SERVICE),
            alarm_friendly_name=Metric.CAPACITY_SHORTFALL,
            add_alarm={
                "Sustained": CustomThreshold(
                    threshold=1,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    evaluation_periods=3,
                    datapoints_to_alarm=2,
                    treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING,
                    alarm_description_override=(
                        f"With work waiting, {config.max_concurrency} caption workers at the observed "
                        "model call time cannot reach the requests per minute configured (below "
                        f"{SHORTFALL_THRESHOLD:.0%} of it). `imgcap status` says by how much and which "
                        "-c maxConcurrency to redeploy with."
                    ),
                )
            },
        )
        facade.monitor_custom(
            alarm_friendly_name="Pipeline",
            human_readable_name="Pipeline (custom metrics, per 5 minutes)",
            metric_groups=[
                CustomMetricGroup(
                    title="Throughput per stage",
                    metrics=[
                        self._metric(Metric.IMAGES_RECEIVED, RESIZE_SERVICE),
                        self._metric(Metric.IMAGES_RESIZED, RESIZE_SERVICE),
                        self._metric(Metric.CAPTIONS_WRITTEN, CAPTION_SERVICE),
                    ],
                ),
                CustomMetricGroup(
                    title="Rejected uploads by reason (ErrorCode)", metrics=[rejected_by_reason]
                ),
                CustomMetricGroup(
                    title="Model throttles and retries",
                    metrics=[
                        throttles,
                        configuration_errors,
                        self._metric(Metric.MODEL_TRANSIENT_ERRORS, CAPTION_SERVICE),
                        self._metric(Metric.DEFERRED, CAPTION_SERVICE),
                        self._metric(Metric.MODEL_CALLS, CAPTION_SERVICE),
                    ],
                ),
                CustomMetricGroup(
                    title="Model latency (ms)",
                    metrics=[
                        self._metric(Metric.MODEL_LATENCY, CAPTION_SERVICE, "p50", "ModelLatency p50"),
                        self._metric(Metric.MODEL_LATENCY, CAPTION_SERVICE, "p95", "ModelLatency p95"),
                    ],
                ),
                CustomMetricGroup(
                    title=(
                        f"Fleet capacity (requests/min reachable by {config.max_concurrency} workers, "
                        "with a backlog)"
                    ),
                    metrics=[
                        self._metric(Metric.REACHABLE_RPM, CAPTION_SERVICE, "Average", "Reachable rpm"),
                        shortfall,
                    ],
                ),
                CustomMetricGroup(title="Tokens", metrics=[input_tokens, output_tokens]),
                CustomMetricGroup(
                    title="Truncated captions (stopReason max_tokens)",
                    metrics=[self._metric(Metric.CAPTIONS_TRUNCATED, CAPTION_SERVICE)],
                ),
                CustomMetricGroup(title="Estimated cost per hour (USD)", metrics=[cost_per_hour]),
                CustomMetricGroup(
                    title="Upload to caption (s)",
                    metrics=[
                        self._metric(Metric.END_TO_END_AGE, CAPTION_SERVICE, "p50", "EndToEndAge p50"),
                        self._metric(Metric.END_TO_END_AGE, CAPTION_SERVICE, "p95", "EndToEndAge p95"),
                    ],
                ),
                CustomMetricGroup(
                    title="Skipped work (duplicates, superseded, folder markers)",
                    metrics=[
                        self._metric(Metric.RESIZE_DUPLICATES, RESIZE_SERVICE),
                        self._metric(Metric.DUPLICATES_AVOIDED, CAPTION_SERVICE),
                        self._metric(Metric.SUPERSEDED, RESIZE_SERVICE, label="Superseded (resize)"),
                        self._metric(Metric.SUPERSEDED, CAPTION_SERVICE, label="Superseded (caption)"),
                        self._metric(Metric.FOLDER_MARKERS, RESIZE_SERVICE),
                    ],
                ),
            ],
        )

    def _queues(self, facade: MonitoringFacade, queues: CaptionQueues, failure_queue: sqs.IQueue) -> None:
        facade.monitor_sqs_queue_with_dlq(
            queue=queues.queue,
            dead_letter_queue=queues.dead_letter_queue,
            human_readable_name="Caption queue",
            alarm_friendly_name="CaptionQueue",
            add_queue_max_message_age_alarm={
                "OldestMessage": MaxMessageAgeThreshold(
                    max_age_in_seconds=self._config.queue_age_alarm_s,
                    alarm_description_override=(
                        f"The oldest caption message is older than {self._config.queue_age_alarm_s} s: "
                        "captioning is falling behind uploads (quota too low or the function failing)."
                    ),
                )
            },
            add_dead_letter_queue_max_size_alarm={
                "NotEmpty": MaxMessageCountThreshold(
                    max_message_count=0,
                    alarm_description_override=(
                        "A caption message reached the dead-letter queue after repeated failures; "
                        "inspect it and redrive with the operator CLI."
                    ),
                )
            },
        )
        facade.monitor_sqs_queue(
            queue=failure_queue,
            human_readable_name="Resize failures (async on-failure destination)",
            alarm_friendly_name="ResizeFailures",
            add_queue_max_size_alarm={
                "NotEmpty": MaxMessageCountThreshold(
                    max_message_count=0,
                    alarm_description_override=(
                        "An upload event failed the resize function after all async retries; the event "
                        "is kept on the resize-failure queue."
                    ),
                )
            },
        )

    def _functions(self, facade: MonitoringFacade, resize: ResizeStage, caption: CaptionStage) -> None:
        for stage_name, function in (("Resize", resize.function), ("Caption", caption.function)):
            facade.monitor_lambda_function(
                lambda_function=function,
                human_readable_name=f"{stage_name} function",
                alarm_friendly_name=f"{stage_name}Function",
                add_fault_count_alarm={
                    "Errors": ErrorCountThreshold(
                        max_error_count=0,
                        alarm_description_override=(
                            f"The {stage_name.lower()} function raised an unhandled error "
                            "(see the 'why did this image fail' saved query)."
                        ),
                    )
                },
            )

    # -- saved Logs Insights queries ---------------------------------------------------------

    def _saved_queries(self, *log_groups: logs.ILogGroup) -> list[logs.CfnQueryDefinition]:
        names = [group.log_group_name for group in log_groups]
        folder = self._config.stack_name
        return [
            logs.CfnQueryDefinition(
                self,
                "WhyDidThisImageFail",
                name=f"{folder}/why-did-this-image-fail",
                query_string=_LOG_QUERY_WHY_FAILED,
                log_group_names=names,
            ),
            logs.CfnQueryDefinition(
                self,
                "FailuresByErrorCode",
                name=f"{folder}/failures-by-error-code",
                query_string=_LOG_QUERY_FAILURES_BY_CODE,
                log_group_names=names,
            ),
            logs.CfnQueryDefinition(
                self,
                "SlowestCaptions",
                name=f"{folder}/slowest-captions",
                query_string=_LOG_QUERY_SLOWEST_CAPTIONS,
                log_group_names=[names[-1]],
            ),
        ]
