"""Backfill stage: Bedrock batch inference for large image sets (README "Backfills").

- ``ServiceRole``: the role a batch job runs as. Trusted by ``bedrock.amazonaws.com`` only for this
  account's model-invocation jobs (``aws:SourceAccount`` + ``aws:SourceArn``, as the Bedrock user
  guide's trust policy shows); reads ``batch/input/`` and writes ``batch/output/``, nothing else
  in the bucket; may invoke the configured model (the profile and the models it routes to).
- ``Submit`` function: started by S3 ObjectCreated under ``batch/requests/`` (never ``images/``:
  nothing of the backfill triggers resize). Builds the JSONL files, creates the job, and may pass
  exactly the service role, to Bedrock only (``iam:PassRole`` + ``iam:PassedToService``).
- ``Collect`` function: the EventBridge rule on ``Batch Inference Job State Change`` and a schedule
  (the poll that covers a lost event); ``bedrock:GetModelInvocationJob`` only.
- Failed asynchronous invocations of either function, and events the rule could not deliver, go to
  one encrypted failure queue. Limits come from CDK context (``contract.BATCH_LIMIT_RANGES``),
  validated by the contract's parser, given to the functions as JSON and kept in SSM for the CLI.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.config import StackConfig, bedrock_invoke_resources
from infra.constructs.configuration import Configuration
from infra.constructs.function import PipelineFunction
from infra.constructs.storage import Storage
from infra.nag import acknowledge
from lambdas.shared import contract

FAILURE_RETENTION_DAYS = 14
FUNCTION_TIMEOUT_S = 900  # the submit reads one job's worth of encoded objects; the collect its outputs
FUNCTION_MEMORY_MB = 1024
POLL_MINUTES = 15
SERVICE_PRINCIPAL = "bedrock.amazonaws.com"


def batch_limits_from_context(scope: Construct) -> contract.BatchLimits:
    values = {key: scope.node.try_get_context(key) for key, _, _ in contract.BATCH_LIMIT_RANGES.values()}
    return contract.parse_batch_limits({k: v for k, v in values.items() if v is not None})


class BackfillStage(Construct):
    """``service_role``, ``submit``, ``collect``, ``state_rule``, ``poll_rule``, ``failure_queue``."""

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
        stack = Stack.of(self)
        self.limits = batch_limits_from_context(self)
        self._job_arns = (
            f"arn:{stack.partition}:bedrock:{stack.region}:{stack.account}:model-invocation-job/*"
        )
        self._model_arns = bedrock_invoke_resources(
            config.model_id, partition=stack.partition, region=stack.region, account=stack.account
        )
        self.failure_queue = self._failure_queue()
        self.service_role = self._service_role(storage)
        ssm.StringParameter(
            self,
            "Limits",
            parameter_name=f"{config.ssm_prefix}/{contract.SSM_BATCH_LIMITS_PARAM}",
            string_value=contract.batch_limits_json(self.limits),
            description="Batch job limits the backfill functions use (JSON; -c backfill<Field>=...)",
            tier=ssm.ParameterTier.STANDARD,
        )
        environment = contract.backfill_environment(
            bucket=storage.bucket.bucket_name,
            queue_url=queue.queue_url,
            ssm_prefix=config.ssm_prefix,
            ssm_max_age_s=config.ssm_max_age_s,
            log_level=config.log_level,
            role_arn=self.service_role.role_arn,
            limits=self.limits,
        )
        submit = self._function(
            config,
            code,
            layer,
            environment,
            "Submit",
            contract.BACKFILL_SUBMIT_HANDLER,
            "Backfill: build the JSONL input of a request and create the batch job",
        )
        collect = self._function(
            config,
            code,
            layer,
            environment,
            "Collect",
            contract.BACKFILL_COLLECT_HANDLER,
            "Backfill: turn a finished batch job's output into captions and error records",
        )
        self.submit, self.collect = submit.function, collect.function
        self._grant_submit(submit.role, storage, queue, configuration)
        self._grant_collect(collect.role, storage, queue)

        storage.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(self.submit),
            s3.NotificationKeyFilter(prefix=contract.BATCH_REQUESTS_PREFIX, suffix=".json"),
        )
        self.state_rule = events.Rule(
            self,
            "JobStateChange",
            description="Bedrock batch job state changes -> the backfill collector",
            event_pattern=events.EventPattern(
                source=[contract.BATCH_EVENT_SOURCE], detail_type=[contract.BATCH_EVENT_DETAIL_TYPE]
            ),
        )
        self.poll_rule = events.Rule(
            self,
            "Poll",
            description="Fallback for a lost state-change event: poll every job not yet collected",
            schedule=events.Schedule.rate(Duration.minutes(POLL_MINUTES)),
        )
        for rule in (self.state_rule, self.poll_rule):
            rule.add_target(
                targets.LambdaFunction(self.collect, dead_letter_queue=self.failure_queue, retry_attempts=4)
            )

    # ------------------------------------------------------------------ alarms

    def add_alarms(self, config: StackConfig, topic: sns.ITopic) -> list[cloudwatch.Alarm]:
        """A collected job that Failed, was Stopped or Expired; a submit or event that kept failing."""
        period = Duration.minutes(config.alarm_period_minutes)
        failed_jobs = cloudwatch.Metric(
            namespace=contract.METRICS_NAMESPACE,
            metric_name=contract.BatchMetric.JOBS_FAILED,
            dimensions_map={"service": contract.BACKFILL_SERVICE},
            statistic="Sum",
            period=period,
            label="Batch jobs collected as Failed, Stopped or Expired",
        )
        failures = self.failure_queue.metric_approximate_number_of_messages_visible(
            statistic="Maximum", period=period, label="Backfill submits or events that kept failing"
        )
        alarms = [
            failed_jobs.create_alarm(
                self,
                "FailedJobsAlarm",
                alarm_name=f"{config.stack_name}-Backfill-FailedJobs",
                alarm_description=(
                    "A backfill batch job ended Failed, Stopped or Expired: its unanswered records went "
                    "to the online caption queue (on-demand price). `imgcap backfill --status` shows it."
                ),
                threshold=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
                datapoints_to_alarm=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            failures.create_alarm(
                self,
                "FailuresAlarm",
                alarm_name=f"{config.stack_name}-Backfill-Failures",
                alarm_description=(
                    "A backfill request or a job state change could not be handled after its retries "
                    "(e.g. the per-model job quota): see the backfill failure queue, fix, run it again."
                ),
                threshold=0,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                datapoints_to_alarm=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
        ]
        for alarm in alarms:
            alarm.add_alarm_action(cw_actions.SnsAction(topic))
        return alarms

    # ------------------------------------------------------------------ dashboard

    def add_widgets(self, config: StackConfig, dashboard: cloudwatch.Dashboard) -> None:
        """A backfill row on the pipeline's dashboard: jobs, and how their records ended."""
        period = Duration.minutes(config.alarm_period_minutes)

        def metric(name: str, label: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=contract.METRICS_NAMESPACE,
                metric_name=name,
                dimensions_map={"service": contract.BACKFILL_SERVICE},
                statistic="Sum",
                period=period,
                label=label,
            )

        m = contract.BatchMetric
        dashboard.add_widgets(
            cloudwatch.TextWidget(
                markdown="## Backfills (Bedrock batch inference)\n`imgcap backfill --status` lists the jobs.",
                width=24,
                height=2,
            )
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Batch jobs",
                left=[
                    metric(m.JOBS_SUBMITTED, "Submitted"),
                    metric(m.JOBS_COLLECTED, "Collected"),
                    metric(m.JOBS_FAILED, "Failed, stopped or expired"),
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Batch records by how they ended",
                left=[
                    metric(m.RECORDS_CAPTIONED, "Captioned"),
                    metric(m.RECORDS_DUPLICATE, "Caption already there"),
                    metric(m.RECORDS_SUPERSEDED, "Superseded"),
                    metric(m.RECORDS_ERROR_RECORD, "Error record"),
                    metric(m.RECORDS_REQUEUED, "Back to the online queue"),
                    metric(m.IMAGES_SENT_ONLINE, "Sent online (under the job minimum)"),
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Batch tokens (billed at the batch price)",
                left=[metric(m.INPUT_TOKENS, "Input tokens"), metric(m.OUTPUT_TOKENS, "Output tokens")],
                width=8,
            ),
        )

    # ------------------------------------------------------------------ pieces

    def _function(
        self,
        config: StackConfig,
        code: lambda_.Code,
        layer: lambda_.ILayerVersion,
        environment: dict[str, str],
        name: str,
        handler: str,
        description: str,
    ) -> PipelineFunction:
        return PipelineFunction(
            self,
            name,
            config=config,
            handler=handler,
            service=f"{contract.BACKFILL_SERVICE}-{name.lower()}",
            description=description,
            code=code,
            layer=layer,
            memory_mb=FUNCTION_MEMORY_MB,
            timeout_s=FUNCTION_TIMEOUT_S,
            environment=environment,
            async_retry_attempts=2,
            async_max_event_age=Duration.hours(6),
            async_on_failure=destinations.SqsDestination(self.failure_queue),
            reserved_concurrency=None,
        )

    def _service_role(self, storage: Storage) -> iam.Role:
        stack = Stack.of(self)
        role = iam.Role(
            self,
            "ServiceRole",
            description=f"{stack.stack_name} Bedrock batch jobs: read batch/input/, write batch/output/",
            assumed_by=iam.ServicePrincipal(
                SERVICE_PRINCIPAL,
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnEquals": {"aws:SourceArn": self._job_arns},
                },
            ),
        )
        bucket = storage.bucket
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(f"{contract.BATCH_INPUT_PREFIX}*")],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{contract.BATCH_OUTPUT_PREFIX}*")],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={
                    "StringLike": {
                        "s3:prefix": [f"{contract.BATCH_INPUT_PREFIX}*", f"{contract.BATCH_OUTPUT_PREFIX}*"]
                    }
                },
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["bedrock:InvokeModel"], resources=self._model_arns)
        )
        arn = storage._nag_arn()
        for prefix in (contract.BATCH_INPUT_PREFIX, contract.BATCH_OUTPUT_PREFIX):
            acknowledge(
                role,
                "IAM5",
                f"A batch job reads its JSONL input / writes its output below '{prefix}' only; the "
                "wildcard stands for the per-job file names, which are not known at deploy time.",
                finding=f"Resource::{arn}/{prefix}*",
            )
        return role

    def _grant_bedrock(self, role: iam.Role, actions: list[str], resources: list[str]) -> None:
        role.add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=resources))

    def _acknowledge_jobs(self, role: iam.Role) -> None:
        acknowledge(
            role,
            "IAM5",
            "Batch job ARNs are created at run time (model-invocation-job/<id>); the wildcard is "
            "limited to this account and region's model-invocation jobs.",
            finding="Resource::arn:<AWS::Partition>:bedrock:<AWS::Region>:<AWS::AccountId>:model-invocation-job/*",
        )

    def _grant_submit(
        self, role: iam.Role, storage: Storage, queue: sqs.IQueue, configuration: Configuration
    ) -> None:
        p = contract
        # HEADs the upload, its encoded object, caption and error record; reads the request and the
        # encoded objects; claims (take, read, release); writes input files, the index and job
        # document, the next part of a request, and an error record for a broken encoded object.
        storage.grant_objects(
            role,
            read=[
                p.IMAGES_PREFIX,
                p.ENCODED_PREFIX,
                p.CAPTIONS_PREFIX,
                p.ERRORS_PREFIX,
                p.CLAIMS_PREFIX,
                p.BATCH_REQUESTS_PREFIX,
            ],
            write=[
                p.CLAIMS_PREFIX,
                p.ERRORS_PREFIX,
                p.BATCH_INPUT_PREFIX,
                p.BATCH_JOBS_PREFIX,
                p.BATCH_REQUESTS_PREFIX,
            ],
            delete=[p.CLAIMS_PREFIX, p.BATCH_INPUT_PREFIX],
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:AbortMultipartUpload"],
                resources=[
                    storage.bucket.arn_for_objects(f"{pre}*")
                    for pre in (p.BATCH_INPUT_PREFIX, p.BATCH_JOBS_PREFIX)
                ],
            )
        )
        queue.grant_send_messages(role)
        configuration.grant_read(role)
        self._grant_bedrock(role, ["bedrock:CreateModelInvocationJob"], [*self._model_arns, self._job_arns])
        self._acknowledge_jobs(role)
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.service_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": SERVICE_PRINCIPAL}},
            )
        )

    def _grant_collect(self, role: iam.Role, storage: Storage, queue: sqs.IQueue) -> None:
        p = contract
        # HEADs the upload (currency), the caption and error record; reads the job document, index
        # and outputs, the claims; writes captions, error records and the job document.
        storage.grant_objects(
            role,
            read=[
                p.IMAGES_PREFIX,
                p.CAPTIONS_PREFIX,
                p.ERRORS_PREFIX,
                p.CLAIMS_PREFIX,
                p.BATCH_JOBS_PREFIX,
                p.BATCH_OUTPUT_PREFIX,
            ],
            write=[p.CAPTIONS_PREFIX, p.ERRORS_PREFIX, p.BATCH_JOBS_PREFIX],
            delete=[p.CLAIMS_PREFIX],
        )
        queue.grant_send_messages(role)
        self._grant_bedrock(role, ["bedrock:GetModelInvocationJob"], [self._job_arns])
        self._acknowledge_jobs(role)

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
            "This queue is itself the terminal failure destination of the backfill functions' "
            "asynchronous invocations and of undeliverable rule events (a dead-letter store); "
            "nothing consumes it automatically, so a further DLQ behind it would never receive anything.",
        )
        return queue
