"""Infra tier: synthesize the stack (with cdk-nag) and assert the properties that matter.

The default template comes from running ``app.py`` exactly as ``npx cdk synth`` does (the CLI
hands the app ``CDK_OUTDIR`` and ``CDK_CONTEXT_JSON``), once per session. A second, in-process
synth with non-default context (eu profile, destroy-on-removal, alarm e-mail, another stack name)
covers the context paths. Asset bundling is skipped in both (context ``aws:cdk:bundling-stacks``
= []), so no pip download happens here; the two local bundlers are tested directly below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.config import (
    INFERENCE_PROFILE_REGIONS,
    PROJECT_ROOT,
    ConfigurationError,
    StackConfig,
    bedrock_invoke_resources,
    bedrock_invoke_resources_for,
)

pytestmark = pytest.mark.infra

SKIP_BUNDLING: dict[str, list[str]] = {"aws:cdk:bundling-stacks": []}
ALT_CONTEXT = {
    "stackName": "CapTest",
    "modelId": "eu.amazon.nova-pro-v1:0",
    "destroyOnRemoval": "true",
    "alarmEmail": "ops@example.com",
    "maxConcurrency": "4",
    "prompt": "Describe the picture in one sentence.",
    "queueAgeAlarmSeconds": "600",
    "resizeReservedConcurrency": "7",
    # issue 15: an explicit allowed list (the eu profile plus Nova Premier) and object tags on
    "allowedModelIds": "eu.amazon.nova-pro-v1:0, eu.amazon.nova-premier-v1:0",
    "writeObjectTags": "true",
}


# --- fixtures and template helpers ----------------------------------------------------------


class Synth:
    """One synthesized cloud assembly: the template, the validation report, lookups."""

    def __init__(self, outdir: Path, stack_name: str) -> None:
        self.outdir = outdir
        self.template_path = outdir / f"{stack_name}.template.json"
        self.template: dict[str, Any] = json.loads(self.template_path.read_text())
        self.report: dict[str, Any] = json.loads((outdir / "validation-report.json").read_text())

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template["Resources"]

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == resource_type}

    def one(self, resource_type: str, id_contains: str = "") -> tuple[str, dict[str, Any]]:
        found = [(k, v) for k, v in self.of_type(resource_type).items() if id_contains in k]
        assert len(found) == 1, (
            f"expected one {resource_type} containing {id_contains!r}, got {[k for k, _ in found]}"
        )
        return found[0]

    def props(self, resource_type: str, id_contains: str = "") -> dict[str, Any]:
        return self.one(resource_type, id_contains)[1]["Properties"]

    def function(self, stage: str) -> tuple[str, dict[str, Any]]:
        return self.one("AWS::Lambda::Function", f"{stage}Function")

    def role_statements(self, stage: str) -> list[dict[str, Any]]:
        """All statements of the policies attached to a stage function's role."""
        role_id = self.function(stage)[1]["Properties"]["Role"]["Fn::GetAtt"][0]
        statements: list[dict[str, Any]] = []
        for policy in self.of_type("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"]["Roles"]:
                statements += policy["Properties"]["PolicyDocument"]["Statement"]
        return statements


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _policy_documents(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every policy document in the template: identity, resource, key and inline role policies."""
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        for key in ("PolicyDocument", "KeyPolicy"):
            if key in props:
                yield logical_id, props[key]
        for inline in props.get("Policies", []):
            yield logical_id, inline["PolicyDocument"]


def _s3_grants(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    """action -> the object prefixes it is allowed on (``<bucket arn>/<prefix>*``)."""
    grants: dict[str, set[str]] = {}
    for statement in statements:
        for action in _as_list(statement["Action"]):
            if not action.startswith("s3:"):
                continue
            for resource in _as_list(statement["Resource"]):
                suffix = resource["Fn::Join"][1][1] if "Fn::Join" in resource else "<bucket>"
                grants.setdefault(action, set()).add(suffix)
    return grants


def _joined(value: Any) -> str:
    """Render an Fn::Join/Ref token tree as text, e.g. ``arn:${AWS::Partition}:bedrock:...``."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_joined(part) for part in parts)
    if "Ref" in value:
        return "${" + value["Ref"] + "}"
    if "Fn::GetAtt" in value:
        return "${" + ".".join(value["Fn::GetAtt"]) + "}"
    return json.dumps(value)


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Given app.py run the way the CDK CLI runs it (CDK_OUTDIR + CDK_CONTEXT_JSON)."""
    outdir = tmp_path_factory.mktemp("cdk-out")
    env = {**os.environ, "CDK_OUTDIR": str(outdir), "CDK_CONTEXT_JSON": json.dumps(SKIP_BUNDLING)}
    result = subprocess.run(
        [sys.executable, "app.py"],
        check=False,
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"app.py synth failed:\n{result.stdout}\n{result.stderr}"
    return Synth(outdir, "ImageCaptioning")


@pytest.fixture(scope="session")
def alt_synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Given the same build_app with non-default context, synthesized in process."""
    from infra import build_app

    outdir = tmp_path_factory.mktemp("cdk-out-alt")
    build_app({**SKIP_BUNDLING, **ALT_CONTEXT}, outdir=str(outdir)).synth()
    return Synth(outdir, "CapTest")


# --- cdk-nag and cfn-lint -------------------------------------------------------------------


@pytest.mark.parametrize("which", ["synth", "alt_synth"])
def test_given_a_synth_then_nag_reports_no_open_findings_and_every_ack_is_scoped_and_reasoned(which, request):
    template = request.getfixturevalue(which)
    (report,) = template.report["pluginReports"]
    assert report["pluginName"] == "AwsSolutions"
    assert report["violations"] == []
    acknowledged = report["suppressedViolations"]
    assert acknowledged, "expected the known, acknowledged findings (IAM5 prefixes, SQS3, IAM4)"
    stack_path = template.template_path.name.removesuffix(".template.json")
    for item in acknowledged:
        assert len(item["reason"]) >= 60, item
        # Scoped: acknowledged on the violating resource or its owning construct, never the stack.
        assert item["acknowledgedAt"] != stack_path
        for construct in item["violatingConstructs"]:
            assert construct["constructPath"].startswith(item["acknowledgedAt"] + "/")
        # IAM5 only ever for one exact finding, never the whole rule.
        if item["ruleName"].startswith("AwsSolutions-IAM5"):
            assert item["ruleName"].startswith("AwsSolutions-IAM5[Resource::")
    assert not any("Action::" in item["ruleName"] for item in acknowledged), (
        "no action wildcard is acknowledged"
    )


def test_given_the_acknowledgements_in_code_then_each_one_matches_a_real_finding(synth):
    metadata = json.loads((synth.outdir / "ImageCaptioning.metadata.json").read_text())
    made = {
        (path.lstrip("/"), ack_id.removeprefix("AwsSolutions::"))
        for path, entries in metadata.items()
        for entry in entries
        if entry["type"] == "aws:cdk:acknowledged-rules"
        for ack_id in entry["data"]
    }
    (report,) = synth.report["pluginReports"]
    used = {(item["acknowledgedAt"], item["ruleName"]) for item in report["suppressedViolations"]}
    assert made, "expected acknowledgements"
    assert made == used, f"stale acknowledgements: {sorted(made - used)}"


def test_given_an_unencrypted_queue_under_the_same_nag_setup_when_synthesized_then_synth_fails(tmp_path):
    from aws_cdk import App, Stack
    from aws_cdk import aws_sqs as sqs

    from infra.nag import enable_nag

    # Given: a throwaway app with one unencrypted, non-SSL queue and the project's nag wiring
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Throwaway")
    sqs.Queue(stack, "Plain", encryption=sqs.QueueEncryption.UNENCRYPTED)
    enable_nag(app)
    # When / Then: synth raises, and the report names the findings
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    failed = {v["ruleName"] for r in report["pluginReports"] for v in r["violations"]}
    assert {"AwsSolutions-SQS2", "AwsSolutions-SQS4"} <= failed


@pytest.mark.parametrize("which", ["synth", "alt_synth"])
def test_given_the_template_when_cfn_lint_runs_then_there_are_no_matches(which, request):
    from cfnlint.api import lint_file

    template = request.getfixturevalue(which)
    matches = lint_file(template.template_path)
    assert [str(m) for m in matches] == []


def _auto_delete_role(template: Synth) -> dict[str, Any] | None:
    roles = [k for k in template.of_type("AWS::IAM::Role") if k.startswith("CustomS3AutoDeleteObjects")]
    return {"Fn::GetAtt": [roles[0], "Arn"]} if roles else None


def test_given_any_policy_in_the_template_then_no_allow_statement_uses_an_action_wildcard(synth, alt_synth):
    for template in (synth, alt_synth):
        # Only with -c destroyOnRemoval=true: aws-cdk-lib's auto-delete provider is granted
        # s3:DeleteObject*/s3:List*/s3:GetBucket* by the bucket policy it writes. Not in a default deploy.
        exempt = _auto_delete_role(template)
        assert (exempt is None) == (template is synth)
        for logical_id, document in _policy_documents(template.template):
            for statement in document["Statement"]:
                if statement["Effect"] != "Allow":
                    continue  # e.g. the SSL-only Deny s3:* / sqs:* statements
                if exempt is not None and statement.get("Principal") == {"AWS": exempt}:
                    continue
                for action in _as_list(statement["Action"]):
                    assert "*" not in action, f"{logical_id}: {action}"


def test_given_any_identity_policy_then_resource_star_is_only_used_for_x_ray(synth):
    for policy in synth.of_type("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "*" in _as_list(statement["Resource"]):
                assert sorted(_as_list(statement["Action"])) == [
                    "xray:PutTelemetryRecords",
                    "xray:PutTraceSegments",
                ]


# --- storage --------------------------------------------------------------------------------


def test_given_the_buckets_then_they_are_private_encrypted_ssl_only_owner_enforced_and_retained(synth):
    buckets = synth.of_type("AWS::S3::Bucket")
    assert len(buckets) == 2
    policies = {
        _joined(p["Properties"]["Bucket"]): p["Properties"]
        for p in synth.of_type("AWS::S3::BucketPolicy").values()
    }
    for logical_id, bucket in buckets.items():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
            "ServerSideEncryptionByDefault"
        ]
        assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
        assert bucket["DeletionPolicy"] == "Retain"
        ssl_deny = [
            s
            for s in policies["${" + logical_id + "}"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert ssl_deny, f"{logical_id} is not SSL-only"


def test_given_the_pipeline_bucket_then_it_logs_access_and_has_the_lifecycle_rules(synth):
    props = synth.props("AWS::S3::Bucket", "StorageBucket")
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {
        "Ref": synth.one("AWS::S3::Bucket", "AccessLogs")[0]
    }
    rules = {rule["Id"]: rule for rule in props["LifecycleConfiguration"]["Rules"]}
    assert rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 7
    }
    assert rules["expire-claims"]["Prefix"] == "claims/"
    assert rules["expire-claims"]["ExpirationInDays"] == 1


def test_given_destroy_on_removal_then_buckets_are_deleted_with_their_objects(alt_synth):
    for bucket in alt_synth.of_type("AWS::S3::Bucket").values():
        assert bucket["DeletionPolicy"] == "Delete"
    assert len(alt_synth.of_type("Custom::S3AutoDeleteObjects")) == 2
    for group in alt_synth.of_type("AWS::Logs::LogGroup").values():
        assert group["DeletionPolicy"] == "Delete"


def test_given_the_upload_notification_then_only_object_created_under_images_triggers_resize(synth):
    config = synth.props("Custom::S3BucketNotifications")["NotificationConfiguration"]
    assert set(config) <= {"LambdaFunctionConfigurations", "QueueConfigurations"}  # queue: search stage
    assert not any(
        "ObjectCreated" in c["Events"][0] and "images/" in json.dumps(c)
        for c in config.get("QueueConfigurations", [])
    )
    resize_arn = {"Fn::GetAtt": [synth.function("Resize")[0], "Arn"]}
    # The backfill's own notification (batch/requests/, tests/infra/test_backfill_stage.py) is the other one.
    (only,) = [c for c in config["LambdaFunctionConfigurations"] if c["LambdaFunctionArn"] == resize_arn]
    assert only["Events"] == ["s3:ObjectCreated:*"]
    assert only["Filter"] == {"Key": {"FilterRules": [{"Name": "prefix", "Value": "images/"}]}}
    assert only["LambdaFunctionArn"] == {"Fn::GetAtt": [synth.function("Resize")[0], "Arn"]}


# --- queues and event source ----------------------------------------------------------------


def test_given_the_caption_queue_then_dlq_redrive_visibility_and_retention_hold(synth):
    queue_id, queue = synth.one("AWS::SQS::Queue", "CaptionQueuesQueue")
    dlq_id, dlq = synth.one("AWS::SQS::Queue", "CaptionQueuesDeadLetterQueue")
    caption_timeout = synth.function("Caption")[1]["Properties"]["Timeout"]
    redrive = queue["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    assert redrive["maxReceiveCount"] >= 20
    assert queue["Properties"]["VisibilityTimeout"] >= 6 * caption_timeout
    assert dlq["Properties"]["MessageRetentionPeriod"] > queue["Properties"]["MessageRetentionPeriod"]
    assert dlq["Properties"]["MessageRetentionPeriod"] == 14 * 86400
    assert queue_id != dlq_id


def test_given_every_queue_then_it_is_encrypted_and_ssl_only(synth):
    queue_policies = synth.of_type("AWS::SQS::QueuePolicy").values()
    for logical_id, queue in synth.of_type("AWS::SQS::Queue").items():
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props
        guarded = [
            p
            for p in queue_policies
            if {"Ref": logical_id} in p["Properties"]["Queues"]
            and any(
                s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
                for s in p["Properties"]["PolicyDocument"]["Statement"]
            )
        ]
        assert guarded, f"{logical_id} is not SSL-only"


def test_given_the_event_source_then_small_batches_partial_failures_and_max_concurrency(synth, alt_synth):
    # Default: `auto` = ceil(100 rpm / 60 x 4.0 s x 1.25) = 9; the alternative context says 4.
    for template, concurrency in ((synth, 9), (alt_synth, 4)):
        mapping = template.props("AWS::Lambda::EventSourceMapping", "CaptionStage")
        function_id, function = template.function("Caption")
        assert mapping["FunctionName"] == {"Ref": function_id}
        assert mapping["EventSourceArn"] == {
            "Fn::GetAtt": [template.one("AWS::SQS::Queue", "CaptionQueuesQueue")[0], "Arn"]
        }
        assert mapping["BatchSize"] <= 5
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["ScalingConfig"] == {"MaximumConcurrency": concurrency}
        assert function["Properties"]["Environment"]["Variables"]["MAX_CONCURRENCY"] == str(concurrency)
        assert "ReservedConcurrentExecutions" not in function["Properties"]


def test_given_the_resize_function_then_failed_async_events_are_kept_on_an_encrypted_queue(synth):
    config = synth.props("AWS::Lambda::EventInvokeConfig", "ResizeStage")
    failure_queue_id, failure_queue = synth.one("AWS::SQS::Queue", "ResizeStageFailureQueue")
    assert config["FunctionName"] == {"Ref": synth.function("Resize")[0]}
    assert config["MaximumRetryAttempts"] == 2
    assert config["MaximumEventAgeInSeconds"] == 6 * 3600
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": [failure_queue_id, "Arn"]
    }
    assert failure_queue["Properties"]["MessageRetentionPeriod"] == 14 * 86400


# --- functions, layer, IAM ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "handler", "service", "memory"),
    [
        ("Resize", "lambdas.resize.handler.lambda_handler", "resize-encode", 1769),
        ("Caption", "lambdas.caption.handler.lambda_handler", "caption", 512),
    ],
)
def test_given_each_function_then_runtime_arch_tracing_layer_logs_and_env_follow_the_contract(
    synth, stage, handler, service, memory
):
    props = synth.function(stage)[1]["Properties"]
    assert props["Handler"] == handler
    assert props["Runtime"] == "python3.14"
    assert props["Architectures"] == ["arm64"]
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["MemorySize"] == memory
    assert props["Timeout"] == 120
    assert props["Layers"] == [{"Ref": synth.one("AWS::Lambda::LayerVersion")[0]}]
    log_group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
    log_group = synth.resources[log_group_id]
    assert log_group["Properties"]["RetentionInDays"] == 30
    assert log_group["DeletionPolicy"] == "Retain"
    env = props["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] == service
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "ImageCaptioning"
    assert env["SSM_PREFIX"] == "/ImageCaptioning"
    assert env["BUCKET_NAME"] == {"Ref": synth.one("AWS::S3::Bucket", "StorageBucket")[0]}
    assert env["POWERTOOLS_LOG_LEVEL"] == "INFO"


@pytest.mark.parametrize("stage", ["Resize", "Caption"])
def test_given_each_function_then_the_stack_and_the_local_runtime_give_it_the_same_environment(synth, stage):
    """Issue 12: both call the contract's builder; the local runtime adds only what Lambda sets itself."""
    from pathlib import Path

    from imgcap.local.functions import function_specs
    from imgcap.local.options import LocalOptions
    from imgcap.local.provision import LocalStack

    stack_env = synth.function(stage)[1]["Properties"]["Environment"]["Variables"]
    local = LocalStack("ImageCaptioning", "b", "/ImageCaptioning", "q", "arn", "dlq", "ev", "rf", 20, 720)
    options = LocalOptions(images=Path("."), out=Path("out"), concurrency=9)  # the stack default (auto)
    resize, caption = function_specs(options, local, {})
    local_env = (resize if stage == "Resize" else caption).env
    assert set(stack_env) <= set(local_env)
    lambda_runtime = {
        k for k in set(local_env) - set(stack_env) if k.startswith(("AWS_", "POWERTOOLS_TRACE"))
    }
    inherited = {k for k in local_env if k in os.environ and local_env[k] == os.environ[k]}
    assert set(local_env) - set(stack_env) - lambda_runtime - inherited <= {"PYTHONUNBUFFERED"}
    for name, value in stack_env.items():  # plain values (not CloudFormation references) are equal
        if isinstance(value, str) and name not in {
            "THROTTLE_BACKOFF_BASE_SECONDS",
            "THROTTLE_BACKOFF_MAX_SECONDS",
            "BEDROCK_READ_TIMEOUT_SECONDS",
            "CLAIM_LEASE_SECONDS",
            "SSM_MAX_AGE_SECONDS",
        }:  # the local runtime scales these knobs down on purpose (LocalTuning)
            assert local_env[name] == value, name


def test_given_the_env_vars_then_queue_url_goes_to_resize_and_caption_knobs_to_caption(synth):
    resize = synth.function("Resize")[1]["Properties"]["Environment"]["Variables"]
    caption = synth.function("Caption")[1]["Properties"]["Environment"]["Variables"]
    assert resize["QUEUE_URL"] == {"Ref": synth.one("AWS::SQS::Queue", "CaptionQueuesQueue")[0]}
    assert "QUEUE_URL" not in caption
    knobs = {
        "THROTTLE_BACKOFF_BASE_SECONDS": "10",
        "THROTTLE_BACKOFF_MAX_SECONDS": "300",
        "MODEL_ERROR_MAX_ATTEMPTS": "3",
        "BEDROCK_READ_TIMEOUT_SECONDS": "50",
        "BEDROCK_MAX_ATTEMPTS": "2",
        "CLAIM_LEASE_SECONDS": "900",
    }
    assert {k: caption[k] for k in knobs} == knobs
    assert int(caption["CLAIM_LEASE_SECONDS"]) > synth.function("Caption")[1]["Properties"]["Timeout"]


def test_given_the_layer_then_it_targets_the_function_runtime_and_architecture(synth):
    layer = synth.props("AWS::Lambda::LayerVersion")
    assert layer["CompatibleRuntimes"] == ["python3.14"]
    assert layer["CompatibleArchitectures"] == ["arm64"]


def test_given_each_role_then_s3_access_is_scoped_to_the_prefixes_the_stage_uses(synth):
    assert _s3_grants(synth.role_statements("Resize")) == {
        "s3:GetObject": {"/images/*", "/base64_images/*"},
        "s3:PutObject": {"/base64_images/*", "/errors/*"},
        "s3:DeleteObject": {"/errors/*"},
        "s3:ListBucket": {"<bucket>"},
    }
    assert _s3_grants(synth.role_statements("Caption")) == {
        # batch/jobs/*: a backfill job's document, read when a batch job holds the claim
        "s3:GetObject": {
            "/images/*",
            "/base64_images/*",
            "/captions/*",
            "/errors/*",
            "/claims/*",
            "/batch/jobs/*",
        },
        "s3:PutObject": {"/captions/*", "/errors/*", "/claims/*", "/health/*"},
        "s3:DeleteObject": {"/claims/*"},
        "s3:ListBucket": {"<bucket>"},
    }


def test_given_each_role_then_ssm_reads_are_scoped_to_the_stack_prefix(synth):
    for stage in ("Resize", "Caption"):
        (statement,) = [
            s for s in synth.role_statements(stage) if "ssm:GetParametersByPath" in _as_list(s["Action"])
        ]
        assert sorted(statement["Action"]) == [
            "ssm:GetParameter",
            "ssm:GetParameters",
            "ssm:GetParametersByPath",
        ]
        resources = sorted(_joined(r) for r in statement["Resource"])
        assert [r.split(":parameter")[1] for r in resources] == ["/ImageCaptioning", "/ImageCaptioning/*"]


def _bedrock_resources(template: Synth) -> set[str]:
    statements = [
        s
        for s in template.role_statements("Caption")
        if any(a.startswith("bedrock:") for a in _as_list(s["Action"]))
    ]
    (statement,) = statements
    assert statement["Action"] == "bedrock:InvokeModel"
    return {_joined(r) for r in statement["Resource"]}


def _tokens_arns(model_ids: tuple[str, ...]) -> set[str]:
    return set(
        bedrock_invoke_resources_for(
            model_ids, partition="${AWS::Partition}", region="${AWS::Region}", account="${AWS::AccountId}"
        )
    )


def test_given_the_default_allowed_models_then_bedrock_invoke_covers_exactly_them(synth):
    # Given no allowedModelIds: the model plus Nova Lite and Nova 2 Lite on the us profile family
    resources = _bedrock_resources(synth)
    assert resources == _tokens_arns(
        ("us.amazon.nova-pro-v1:0", "us.amazon.nova-lite-v1:0", "us.amazon.nova-2-lite-v1:0")
    )
    for model in ("nova-pro-v1:0", "nova-lite-v1:0", "nova-2-lite-v1:0"):
        assert (
            f"arn:${{AWS::Partition}}:bedrock:${{AWS::Region}}:${{AWS::AccountId}}:inference-profile/us.amazon.{model}"
            in resources
        )
        for region in INFERENCE_PROFILE_REGIONS["us"]:
            assert f"arn:${{AWS::Partition}}:bedrock:{region}::foundation-model/amazon.{model}" in resources
    assert len(resources) == 3 * (1 + len(INFERENCE_PROFILE_REGIONS["us"]))
    assert not [s for s in synth.role_statements("Resize") if "bedrock" in json.dumps(s["Action"])]
    variables = synth.function("Caption")[1]["Properties"]["Environment"]["Variables"]
    assert variables["ALLOWED_MODEL_IDS"] == (
        "us.amazon.nova-pro-v1:0,us.amazon.nova-lite-v1:0,us.amazon.nova-2-lite-v1:0"
    )


def test_given_allowed_model_ids_in_context_then_bedrock_invoke_covers_exactly_that_list(alt_synth):
    resources = _bedrock_resources(alt_synth)
    assert resources == _tokens_arns(("eu.amazon.nova-pro-v1:0", "eu.amazon.nova-premier-v1:0"))
    assert not any("nova-lite" in r for r in resources)
    for region in INFERENCE_PROFILE_REGIONS["eu"]:
        assert f"arn:${{AWS::Partition}}:bedrock:{region}::foundation-model/amazon.nova-pro-v1:0" in resources
        assert (
            f"arn:${{AWS::Partition}}:bedrock:{region}::foundation-model/amazon.nova-premier-v1:0"
            in resources
        )
    variables = alt_synth.function("Caption")[1]["Properties"]["Environment"]["Variables"]
    assert variables["ALLOWED_MODEL_IDS"] == "eu.amazon.nova-pro-v1:0,eu.amazon.nova-premier-v1:0"


def _tagging_statements(template: Synth) -> list[dict[str, Any]]:
    return [
        s
        for s in template.role_statements("Caption")
        if any("ObjectTagging" in a for a in _as_list(s["Action"]))
    ]


def test_given_object_tags_off_by_default_then_no_role_may_read_or_write_object_tags(synth):
    assert _tagging_statements(synth) == []
    for stage in ("Resize", "Caption"):
        assert "Tagging" not in json.dumps([s["Action"] for s in synth.role_statements(stage)])
    assert (
        synth.function("Caption")[1]["Properties"]["Environment"]["Variables"]["WRITE_OBJECT_TAGS"] == "false"
    )


def test_given_write_object_tags_then_the_caption_role_may_tag_uploads_only(alt_synth):
    (statement,) = _tagging_statements(alt_synth)
    assert sorted(_as_list(statement["Action"])) == ["s3:GetObjectTagging", "s3:PutObjectTagging"]
    (resource,) = _as_list(statement["Resource"])
    assert _joined(resource).endswith("/images/*")
    assert not [s for s in alt_synth.role_statements("Resize") if "Tagging" in json.dumps(s["Action"])]
    assert (
        alt_synth.function("Caption")[1]["Properties"]["Environment"]["Variables"]["WRITE_OBJECT_TAGS"]
        == "true"
    )


def test_given_a_model_outside_allowed_model_ids_then_synth_fails_naming_both():
    context = {"modelId": "us.amazon.nova-premier-v1:0", "allowedModelIds": "us.amazon.nova-pro-v1:0"}
    with pytest.raises(
        ConfigurationError,
        match=r"modelId 'us.amazon.nova-premier-v1:0' is not in context allowedModelIds \(us.amazon.nova-pro",
    ):
        StackConfig.from_context(context.get)
    with pytest.raises(ConfigurationError, match="not a model id"):
        StackConfig.from_context({"allowedModelIds": "us.amazon.nova-pro-v1:0, arn:*"}.get)


def test_given_an_app_synth_with_a_model_outside_the_list_then_it_exits_with_the_message(tmp_path):
    from infra import build_app

    context = {
        **SKIP_BUNDLING,
        "modelId": "eu.amazon.nova-lite-v1:0",
        "allowedModelIds": "eu.amazon.nova-pro-v1:0",
    }
    with pytest.raises(ConfigurationError, match="the caption role could not invoke it"):
        build_app(context, outdir=str(tmp_path)).synth()


# --- configuration --------------------------------------------------------------------------


def _ssm(template: Synth) -> dict[str, Any]:
    return {
        p["Properties"]["Name"]: p["Properties"] for p in template.of_type("AWS::SSM::Parameter").values()
    }


def test_given_the_ssm_parameters_then_every_tunable_has_the_lambda_default_and_facts_are_wired(synth):
    from lambdas.shared.config import SSM_BUCKET_PARAM, SSM_DEFAULTS, SSM_DLQ_URL_PARAM, SSM_QUEUE_URL_PARAM

    params = _ssm(synth)
    assert {name: params[f"/ImageCaptioning/{name}"]["Value"] for name in SSM_DEFAULTS} == SSM_DEFAULTS
    assert all(p["Type"] == "String" for p in params.values())
    assert params[f"/ImageCaptioning/{SSM_BUCKET_PARAM}"]["Value"] == {
        "Ref": synth.one("AWS::S3::Bucket", "StorageBucket")[0]
    }
    assert params[f"/ImageCaptioning/{SSM_QUEUE_URL_PARAM}"]["Value"] == {
        "Ref": synth.one("AWS::SQS::Queue", "CaptionQueuesQueue")[0]
    }
    assert params[f"/ImageCaptioning/{SSM_DLQ_URL_PARAM}"]["Value"] == {
        "Ref": synth.one("AWS::SQS::Queue", "CaptionQueuesDeadLetterQueue")[0]
    }
    # + the bucket, queue and DLQ facts, the backfill's batch limits (test_backfill_stage.py) and the
    # search stage's facts (tests/infra/test_search_stage.py)
    search_facts = 8
    assert len(params) == len(SSM_DEFAULTS) + 4 + search_facts


def test_given_context_overrides_then_parameters_and_prefix_follow_them(alt_synth):
    params = _ssm(alt_synth)
    assert params["/CapTest/prompt"]["Value"] == ALT_CONTEXT["prompt"]
    assert params["/CapTest/model-id"]["Value"] == ALT_CONTEXT["modelId"]
    assert params["/CapTest/max-tokens"]["Value"] == "300"
    assert (
        alt_synth.function("Caption")[1]["Properties"]["Environment"]["Variables"]["SSM_PREFIX"] == "/CapTest"
    )


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"maxConcurrency": "1"}, "maxConcurrency"),
        ({"maxConcurrency": "ten"}, "maxConcurrency must be 'auto' or a whole number"),
        ({"maxConcurrency": "1001"}, "maxConcurrency must be 'auto' or between 2 and 1000"),
        ({"modelLatencySeconds": "0"}, "modelLatencySeconds"),
        ({"temperature": "1.5"}, "temperature"),
        ({"topK": "2.5"}, "topK"),
        ({"targetSize": "big"}, "targetSize"),
        # Issue 11 item 8: one validation for synth and cold start, within what the model accepts.
        ({"targetSize": "10x10"}, r"targetSize must have both sides between 16 and 8000"),
        ({"targetSize": "9999x9999"}, r"targetSize must have both sides between 16 and 8000"),
        ({"targetSize": "8192x8192"}, r"targetSize must have both sides between 16 and 8000"),
        ({"targetSize": "4096x2160"}, r"targetSize '4096x2160' is too large.*25 MB"),
        ({"resizeReservedConcurrency": "0"}, "resizeReservedConcurrency"),
        ({"resizePolicy": "squash"}, "resizePolicy"),
        ({"modelId": "us.amazon.*"}, "modelId"),
        ({"destroyOnRemoval": "maybe"}, "destroyOnRemoval"),
        ({"stackName": "9lives"}, "stackName"),
        ({"alarmEmail": "not-an-address"}, "alarmEmail"),
    ],
)
def test_given_invalid_context_when_parsed_then_the_error_names_the_key(context, message):
    with pytest.raises(ConfigurationError, match=message):
        StackConfig.from_context(context.get)


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({}, 9),  # 100 rpm (default) x 4.0 s (Nova Pro) / 60 x 1.25 = 8.3 -> 9
        ({"requestsPerMinute": "200"}, 17),  # 16.7 -> 17
        ({"requestsPerMinute": "200", "modelLatencySeconds": "4.3"}, 18),  # the example
        ({"requestsPerMinute": "200", "modelId": "us.amazon.nova-lite-v1:0"}, 9),  # 2.0 s a call
        ({"requestsPerMinute": "1", "maxConcurrency": "auto"}, 2),  # never below the mapping's 2
        ({"requestsPerMinute": "1000000"}, 1000),  # never above its 1,000
        ({"requestsPerMinute": "200", "maxConcurrency": "12"}, 12),  # an explicit number wins
    ],
)
def test_given_max_concurrency_auto_then_it_covers_the_quota_at_the_model_latency(context, expected):
    config = StackConfig.from_context(context.get)
    assert config.max_concurrency == expected


def test_given_the_target_sizes_the_functions_accept_then_synth_accepts_them_too():
    from lambdas.shared.contract import ContractError as ConfigError
    from lambdas.shared.contract import parse_target_size

    for size in ("1280x720", "16x16", "8000x16", "2560x1440", "1920x1080"):
        parse_target_size(size)  # the functions accept it ...
        StackConfig.from_context({"targetSize": size}.get)  # ... and so does synth
    for size in ("15x720", "8001x16", "4096x2160"):
        with pytest.raises(ConfigError):
            parse_target_size(size)
        with pytest.raises(ConfigurationError, match="targetSize"):
            StackConfig.from_context({"targetSize": size}.get)


def test_given_the_caption_knobs_then_a_hung_call_cannot_outlive_the_function():
    """Issue 11 item 6: attempts x (read + connect) plus the margin fit in the timeout."""
    import dataclasses

    from infra.config import BEDROCK_CONNECT_TIMEOUT_S, CAPTION_SAFETY_MARGIN_S, CaptionKnobs

    config = StackConfig()
    knobs = config.caption
    worst = knobs.bedrock_max_attempts * (knobs.bedrock_read_timeout_s + BEDROCK_CONNECT_TIMEOUT_S)
    assert worst + CAPTION_SAFETY_MARGIN_S <= config.caption_timeout_s
    too_long = dataclasses.replace(config, caption=CaptionKnobs(bedrock_read_timeout_s=60))
    with pytest.raises(ConfigurationError, match="must fit in the caption timeout"):
        too_long.validate()
    short_lease = dataclasses.replace(
        config, caption=CaptionKnobs(claim_lease_s=config.caption_timeout_s + 1)
    )
    with pytest.raises(ConfigurationError, match="claim lease"):
        short_lease.validate()


def test_given_the_resize_function_then_a_reserved_concurrency_caps_upload_bursts(synth, alt_synth):
    """Issue 11 item 10: bursts cannot take the account's concurrency; the caption one has none."""
    resize = synth.function("Resize")[1]["Properties"]
    caption = synth.function("Caption")[1]["Properties"]
    assert resize["ReservedConcurrentExecutions"] == 20
    assert "ReservedConcurrentExecutions" not in caption
    assert alt_synth.function("Resize")[1]["Properties"]["ReservedConcurrentExecutions"] == 7


def test_given_no_context_then_defaults_match_the_contract():
    empty: dict[str, Any] = {}
    config = StackConfig.from_context(empty.get)
    assert config.stack_name == "ImageCaptioning"
    assert config.ssm_prefix == "/ImageCaptioning"
    assert config.max_concurrency == 9  # auto: 100 rpm at Nova Pro's 4.0 s, +25% headroom
    assert config.queue_visibility_timeout_s >= 6 * config.caption_timeout_s
    assert config.destroy_on_removal is False


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        (
            "apac.amazon.nova-pro-v1:0",
            ["arn:aws:bedrock:R:A:inference-profile/apac.amazon.nova-pro-v1:0"]
            + [
                f"arn:aws:bedrock:{r}::foundation-model/amazon.nova-pro-v1:0"
                for r in INFERENCE_PROFILE_REGIONS["apac"]
            ],
        ),
        ("amazon.nova-pro-v1:0", ["arn:aws:bedrock:R::foundation-model/amazon.nova-pro-v1:0"]),
    ],
)
def test_given_a_model_id_then_the_invoke_resources_are_the_profile_and_routed_models_only(
    model_id, expected
):
    assert bedrock_invoke_resources(model_id, partition="aws", region="R", account="A") == expected


# --- monitoring -----------------------------------------------------------------------------


def _alarms(template: Synth) -> dict[str, dict[str, Any]]:
    return {
        a["Properties"]["AlarmName"]: a["Properties"]
        for a in template.of_type("AWS::CloudWatch::Alarm").values()
    }


def _alarm_metric(alarm: dict[str, Any]) -> dict[str, Any]:
    if "Metrics" not in alarm:  # a plain single-metric alarm (the search stage's DLQ alarm)
        return {"MetricName": alarm["MetricName"], "Dimensions": alarm["Dimensions"]}
    (query,) = alarm["Metrics"]
    return query["MetricStat"]["Metric"]


def test_given_the_dashboard_then_its_name_is_an_output_and_it_shows_every_required_view(synth):
    dashboard_id, dashboard = synth.one("AWS::CloudWatch::Dashboard")
    assert dashboard["Properties"]["DashboardName"] == "ImageCaptioning-pipeline"
    assert synth.template["Outputs"]["DashboardName"]["Value"] == {"Ref": dashboard_id}
    body = _joined(dashboard["Properties"]["DashboardBody"])
    for needle in (
        '"ImagesReceived"',
        '"ImagesResized"',
        '"CaptionsWritten"',
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
        '"Errors"',
        '"ModelThrottles"',
        '"stat":"p50"',
        '"stat":"p95"',
        '"InputTokens"',
        '"OutputTokens"',
        "inTok / 1000 * 0.0008 + outTok / 1000 * 0.0032) * 3600 / PERIOD(inTok)",
        "SEARCH('{ImageCaptioning,ErrorCode,service} MetricName=",
    ):
        assert needle in body, needle


def test_given_the_alarms_then_each_has_its_threshold_and_notifies_the_topic(synth):
    topic_id = synth.one("AWS::SNS::Topic")[0]
    alarms = _alarms(synth)
    by_metric = {
        (_alarm_metric(a)["MetricName"], _joined(_alarm_metric(a)["Dimensions"][0]["Value"])): a
        for a in alarms.values()
    }
    queue, dlq, failures = (
        synth.one("AWS::SQS::Queue", part)[0]
        for part in ("CaptionQueuesQueue", "CaptionQueuesDeadLetter", "ResizeStageFailure")
    )
    backfill_failures = synth.one("AWS::SQS::Queue", "BackfillStageFailure")[0]
    expected = {
        ("ApproximateNumberOfMessagesVisible", "${" + dlq + ".QueueName}"): ("GreaterThanThreshold", 0, 1),
        ("ApproximateAgeOfOldestMessage", "${" + queue + ".QueueName}"): ("GreaterThanThreshold", 900, 1),
        ("ApproximateNumberOfMessagesVisible", "${" + failures + ".QueueName}"): (
            "GreaterThanThreshold",
            0,
            1,
        ),
        ("Errors", "${" + synth.function("Resize")[0] + "}"): ("GreaterThanThreshold", 0, 1),
        ("Errors", "${" + synth.function("Caption")[0] + "}"): ("GreaterThanThreshold", 0, 1),
        ("ModelThrottles", "caption"): ("GreaterThanOrEqualToThreshold", 10, 3),
        ("ModelConfigurationErrors", "caption"): ("GreaterThanOrEqualToThreshold", 1, 1),
        # Issue 13: with a backlog, the fleet cannot reach the target rate (2 of 3 periods).
        ("CapacityShortfall", "caption"): ("GreaterThanOrEqualToThreshold", 1, 3),
        # the backfill stage's own (tests/infra/test_backfill_stage.py)
        ("BatchJobsFailed", "backfill"): ("GreaterThanOrEqualToThreshold", 1, 1),
        ("ApproximateNumberOfMessagesVisible", "${" + backfill_failures + ".QueueName}"): (
            "GreaterThanThreshold",
            0,
            1,
        ),
        # the search stage's (tests/infra/test_search_stage.py)
        (
            "ApproximateNumberOfMessagesVisible",
            "${" + synth.one("AWS::SQS::Queue", "SearchStageDeadLetter")[0] + ".QueueName}",
        ): ("GreaterThanThreshold", 0, 1),
    }
    datapoints = {("CapacityShortfall", "caption"): 2}
    assert set(by_metric) == set(expected)
    for key, (operator, threshold, periods) in expected.items():
        alarm = by_metric[key]
        assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["EvaluationPeriods"]) == (
            operator,
            threshold,
            periods,
        ), key
        assert alarm["DatapointsToAlarm"] == datapoints.get(key, periods)
        assert alarm["AlarmActions"] == [{"Ref": topic_id}]
        assert alarm["AlarmDescription"]


def test_given_a_context_threshold_then_the_age_alarm_uses_it(alt_synth):
    ages = [
        a
        for a in _alarms(alt_synth).values()
        if _alarm_metric(a)["MetricName"] == "ApproximateAgeOfOldestMessage"
    ]
    assert [a["Threshold"] for a in ages] == [600]


def test_given_the_alarm_topic_then_it_is_kms_encrypted_ssl_only_and_cloudwatch_may_publish(synth):
    key_id, key = synth.one("AWS::KMS::Key")
    topic_id, topic = synth.one("AWS::SNS::Topic")
    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert key["Properties"]["EnableKeyRotation"] is True
    key_statements = key["Properties"]["KeyPolicy"]["Statement"]
    (cloudwatch,) = [s for s in key_statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert sorted(cloudwatch["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    statements = synth.props("AWS::SNS::TopicPolicy")["PolicyDocument"]["Statement"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements
    )
    assert any(
        s["Effect"] == "Allow" and s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
        for s in statements
    )
    assert synth.template["Outputs"]["AlarmTopicArn"]["Value"] == {"Ref": topic_id}
    assert synth.of_type("AWS::SNS::Subscription") == {}


def test_given_an_alarm_email_in_context_then_the_topic_has_an_email_subscription(alt_synth):
    subscription = alt_synth.props("AWS::SNS::Subscription")
    assert subscription["Protocol"] == "email"
    assert subscription["Endpoint"] == ALT_CONTEXT["alarmEmail"]


def test_given_the_saved_queries_then_failures_search_both_log_groups_and_slowest_reads_caption(synth):
    queries = {
        q["Properties"]["Name"]: q["Properties"] for q in synth.of_type("AWS::Logs::QueryDefinition").values()
    }
    resize_logs = synth.function("Resize")[1]["Properties"]["LoggingConfig"]["LogGroup"]
    caption_logs = synth.function("Caption")[1]["Properties"]["LoggingConfig"]["LogGroup"]
    why = queries["ImageCaptioning/why-did-this-image-fail"]
    assert why["LogGroupNames"] == [resize_logs, caption_logs]
    assert "source_key" in why["QueryString"]
    assert "error_code" in why["QueryString"]
    by_code = queries["ImageCaptioning/failures-by-error-code"]
    assert "by service, error_code" in by_code["QueryString"]
    slowest = queries["ImageCaptioning/slowest-captions"]
    assert slowest["LogGroupNames"] == [caption_logs]
    assert "sort latency_ms desc" in slowest["QueryString"]


def test_given_the_outputs_then_all_stable_ids_are_present(synth):
    from infra.stack import OUTPUT_IDS

    outputs = synth.template["Outputs"]
    assert set(OUTPUT_IDS) <= set(outputs)
    assert outputs["UploadPrefix"]["Value"] == "images/"
    assert outputs["SsmPrefix"]["Value"] == "/ImageCaptioning"
    assert outputs["BucketName"]["Value"] == {"Ref": synth.one("AWS::S3::Bucket", "StorageBucket")[0]}
    assert outputs["DeadLetterQueueUrl"]["Value"] == {
        "Ref": synth.one("AWS::SQS::Queue", "CaptionQueuesDeadLetterQueue")[0]
    }


# --- local bundling (no Docker) -------------------------------------------------------------


def test_given_the_lambdas_package_when_copy_bundled_then_the_asset_root_holds_it_without_bytecode(tmp_path):
    from aws_cdk import DockerImage

    from infra.bundling import PackageCopyBundling
    from infra.config import LAMBDA_PACKAGE_DIR

    # Given a stale byte-code dir inside a copy of the package
    source = tmp_path / "src" / "lambdas"
    import shutil

    shutil.copytree(LAMBDA_PACKAGE_DIR, source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    out = tmp_path / "out"
    out.mkdir()
    # When
    assert PackageCopyBundling(source).try_bundle(str(out), image=DockerImage.from_registry("unused")) is True
    # Then
    assert (out / "lambdas" / "__init__.py").is_file()
    assert (out / "lambdas" / "resize" / "handler.py").is_file()
    assert (out / "lambdas" / "shared" / "config.py").is_file()
    assert not list(out.rglob("__pycache__"))
    assert [p.name for p in out.iterdir()] == ["lambdas"]


def test_given_the_layer_bundler_then_pip_targets_lambda_arm64_and_the_runtime_sdk_is_pruned(tmp_path):
    from aws_cdk import DockerImage

    from infra.bundling import PipLayerBundling
    from infra.config import LAYER_PLATFORMS, LAYER_REQUIREMENTS

    commands: list[list[str]] = []

    def fake_pip(command):
        # Stands in for pip: lays out what `pip install --target` produces.
        commands.append(list(command))
        target = Path(command[command.index("--target") + 1])
        for name in ("PIL", "aws_lambda_powertools", "botocore", "boto3", "s3transfer", "bin", "__pycache__"):
            (target / name).mkdir(parents=True)
        (target / "botocore-1.44.5.dist-info").mkdir()
        (target / "pillow-13.0.0.dist-info").mkdir()
        (target / "PIL" / "__pycache__").mkdir()
        (target / "PIL" / "Image.py").write_text("")

    bundler = PipLayerBundling(
        LAYER_REQUIREMENTS, python_version="3.14", platforms=LAYER_PLATFORMS, runner=fake_pip, python="py"
    )
    assert bundler.try_bundle(str(tmp_path), image=DockerImage.from_registry("unused")) is True
    (command,) = commands
    assert command[:4] == ["py", "-m", "pip", "install"]
    assert command[command.index("--target") + 1] == str(tmp_path / "python")
    assert "--only-binary=:all:" in command
    assert command[command.index("--implementation") + 1] == "cp"
    assert command[command.index("--python-version") + 1] == "3.14"
    platforms = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    assert platforms == ["manylinux_2_28_aarch64", "manylinux2014_aarch64"]
    assert command[command.index("-r") + 1] == str(LAYER_REQUIREMENTS)
    assert sorted(p.name for p in (tmp_path / "python").iterdir()) == [
        "PIL",
        "aws_lambda_powertools",
        "pillow-13.0.0.dist-info",
    ]
    assert not list((tmp_path / "python").rglob("__pycache__"))
    assert (
        bundler.fingerprint()
        == PipLayerBundling(
            LAYER_REQUIREMENTS, python_version="3.14", platforms=LAYER_PLATFORMS
        ).fingerprint()
    )


def test_given_more_workers_than_requests_per_minute_then_synth_warns_and_the_defaults_do_not(tmp_path):
    """A fleet whose workers may call less than once a minute runs at about half the quota."""
    from aws_cdk.assertions import Annotations, Match

    from infra import build_app

    assert StackConfig.from_context({}.get).warnings == ()
    context = {**SKIP_BUNDLING, "stackName": "WarnTest", "maxConcurrency": "10", "requestsPerMinute": "5"}
    config = StackConfig.from_context(context.get)
    assert len(config.warnings) == 1
    app = build_app(context, outdir=str(tmp_path))
    stack = app.node.find_child("WarnTest")
    Annotations.from_stack(stack).has_warning("*", Match.string_like_regexp("maxConcurrency 10 is more than"))
