"""Infra tier: the backfill stage's IAM, rules and notification, synthesized with cdk-nag on.

One in-process synth (the same ``build_app`` as ``cdk synth``, bundling skipped) with a batch limit
set in context, so the context path is covered too. cdk-nag fails the synth on any open finding.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from lambdas.shared import contract
from tests.infra.test_stack import SKIP_BUNDLING, Synth, _as_list, _joined, _s3_grants

pytestmark = pytest.mark.infra

CONTEXT = {"backfillMinRecords": "50", "backfillTimeoutHours": "48"}
JOB_ARNS = "arn:${AWS::Partition}:bedrock:${AWS::Region}:${AWS::AccountId}:model-invocation-job/*"


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    from infra import build_app

    outdir = tmp_path_factory.mktemp("cdk-out-backfill")
    build_app({**SKIP_BUNDLING, **CONTEXT}, outdir=str(outdir)).synth()
    return Synth(outdir, "ImageCaptioning")


def _service_role(synth: Synth) -> tuple[str, dict[str, Any]]:
    return synth.one("AWS::IAM::Role", "BackfillStageServiceRole")


def _statements_of_role(synth: Synth, role_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for policy in synth.of_type("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def test_given_the_service_role_then_only_bedrock_may_assume_it_for_this_accounts_jobs(synth):
    _, role = _service_role(synth)
    (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "bedrock.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert _joined(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == JOB_ARNS


def test_given_the_service_role_then_it_reads_batch_input_and_writes_batch_output_only(synth):
    role_id, _ = _service_role(synth)
    statements = _statements_of_role(synth, role_id)
    assert _s3_grants(statements) == {
        "s3:GetObject": {"/batch/input/*"},
        "s3:PutObject": {"/batch/output/*"},
        "s3:ListBucket": {"<bucket>"},
    }
    (listing,) = [s for s in statements if s["Action"] == "s3:ListBucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["batch/input/*", "batch/output/*"]}}
    (invoke,) = [s for s in statements if s["Action"] == "bedrock:InvokeModel"]
    assert all("nova-pro" in _joined(r) for r in _as_list(invoke["Resource"]))


def test_given_pass_role_then_only_the_submit_function_may_pass_exactly_the_service_role_to_bedrock(synth):
    role_id, _ = _service_role(synth)
    passing = [
        (policy_id, s)
        for policy_id, policy in synth.of_type("AWS::IAM::Policy").items()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if "iam:PassRole" in _as_list(s["Action"])
    ]
    (policy_id, statement) = passing[0]
    assert len(passing) == 1
    assert policy_id.startswith("BackfillStageSubmitRole")
    assert statement["Action"] == "iam:PassRole"
    assert statement["Resource"] == {"Fn::GetAtt": [role_id, "Arn"]}
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}}


def test_given_the_backfill_functions_then_bedrock_actions_are_job_scoped(synth):
    submit = synth.role_statements("BackfillStageSubmit")
    collect = synth.role_statements("BackfillStageCollect")
    (create,) = [s for s in submit if s["Action"] == "bedrock:CreateModelInvocationJob"]
    resources = [_joined(r) for r in _as_list(create["Resource"])]
    assert JOB_ARNS in resources
    assert all(r == JOB_ARNS or "nova-pro" in r for r in resources)
    (get,) = [s for s in collect if str(s["Action"]).startswith("bedrock:")]
    assert get["Action"] == "bedrock:GetModelInvocationJob"
    assert _joined(get["Resource"]) == JOB_ARNS


def test_given_the_backfill_functions_then_s3_access_is_scoped_to_the_prefixes_they_use(synth):
    assert _s3_grants(synth.role_statements("BackfillStageSubmit")) == {
        "s3:GetObject": {
            "/images/*",
            "/base64_images/*",
            "/captions/*",
            "/errors/*",
            "/claims/*",
            "/batch/requests/*",
        },
        "s3:PutObject": {"/claims/*", "/errors/*", "/batch/input/*", "/batch/jobs/*", "/batch/requests/*"},
        "s3:DeleteObject": {"/claims/*", "/batch/input/*"},
        "s3:AbortMultipartUpload": {"/batch/input/*", "/batch/jobs/*"},
        "s3:ListBucket": {"<bucket>"},
    }
    assert _s3_grants(synth.role_statements("BackfillStageCollect")) == {
        "s3:GetObject": {
            "/images/*",
            "/captions/*",
            "/errors/*",
            "/claims/*",
            "/batch/jobs/*",
            "/batch/output/*",
        },
        "s3:PutObject": {"/captions/*", "/errors/*", "/batch/jobs/*"},
        "s3:DeleteObject": {"/claims/*"},
        "s3:ListBucket": {"<bucket>"},
    }


def test_given_the_rules_then_state_changes_and_a_schedule_reach_the_collector_with_a_dlq(synth):
    collect_id = synth.function("BackfillStageCollect")[0]
    state = synth.props("AWS::Events::Rule", "JobStateChange")
    assert state["EventPattern"] == {
        "source": ["aws.bedrock"],
        "detail-type": ["Batch Inference Job State Change"],
    }
    poll = synth.props("AWS::Events::Rule", "BackfillStagePoll")
    assert poll["ScheduleExpression"] == "rate(15 minutes)"
    dlq_id = synth.one("AWS::SQS::Queue", "BackfillStageFailureQueue")[0]
    for rule in (state, poll):
        (target,) = rule["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [collect_id, "Arn"]}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [dlq_id, "Arn"]}}
    queue = synth.resources[dlq_id]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True


def test_given_the_request_notification_then_only_batch_requests_start_a_submit(synth):
    config = synth.props("Custom::S3BucketNotifications")["NotificationConfiguration"]
    submit_arn = {"Fn::GetAtt": [synth.function("BackfillStageSubmit")[0], "Arn"]}
    (mine,) = [c for c in config["LambdaFunctionConfigurations"] if c["LambdaFunctionArn"] == submit_arn]
    assert mine["Filter"] == {
        "Key": {
            "FilterRules": [
                {"Name": "suffix", "Value": ".json"},
                {"Name": "prefix", "Value": "batch/requests/"},
            ]
        }
    }
    for prefix in (contract.BATCH_INPUT_PREFIX, contract.BATCH_OUTPUT_PREFIX, contract.BATCH_JOBS_PREFIX):
        assert not prefix.startswith(contract.IMAGES_PREFIX)


def test_given_context_limits_then_functions_and_the_ssm_parameter_carry_them(synth):
    expected = contract.parse_batch_limits(CONTEXT)
    for stage in ("BackfillStageSubmit", "BackfillStageCollect"):
        env = synth.function(stage)[1]["Properties"]["Environment"]["Variables"]
        assert json.loads(env[contract.ENV_BATCH_LIMITS]) == json.loads(contract.batch_limits_json(expected))
        assert env[contract.ENV_BATCH_ROLE_ARN] == {"Fn::GetAtt": [_service_role(synth)[0], "Arn"]}
    (parameter,) = [
        p["Properties"]
        for p in synth.of_type("AWS::SSM::Parameter").values()
        if p["Properties"]["Name"] == f"/ImageCaptioning/{contract.SSM_BATCH_LIMITS_PARAM}"
    ]
    assert json.loads(parameter["Value"])["min_records"] == 50


def test_given_the_synth_then_nag_has_no_open_findings_and_backfill_acks_are_scoped(synth):
    (report,) = synth.report["pluginReports"]
    assert report["violations"] == []
    mine = [
        item
        for item in report["suppressedViolations"]
        if any("/BackfillStage/" in c["constructPath"] for c in item["violatingConstructs"])
    ]
    rules = {item["ruleName"] for item in mine}
    assert "AwsSolutions-SQS3" in rules
    assert any(r.endswith("model-invocation-job/*]") for r in rules)
    for item in mine:
        assert len(item["reason"]) >= 60
        assert "Action::" not in item["ruleName"]


def test_given_the_dashboard_then_it_shows_batch_jobs_records_and_tokens(synth):
    _, dashboard = synth.one("AWS::CloudWatch::Dashboard")
    body = _joined(dashboard["Properties"]["DashboardBody"])
    for title in ("Batch jobs", "Batch records by how they ended", "Batch tokens"):
        assert title in body
    m = contract.BatchMetric
    for name in (m.JOBS_SUBMITTED, m.JOBS_FAILED, m.RECORDS_CAPTIONED, m.RECORDS_REQUEUED, m.INPUT_TOKENS):
        assert f'"{name}","service","{contract.BACKFILL_SERVICE}"' in body
