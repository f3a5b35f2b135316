"""Infra tier, issue 17: the search stage (S3 Vectors index, index queue and function) and search=false.

Two in-process synths with cdk-nag on (the same ``build_app`` as ``app.py``): the default context
(search on) and ``-c search=false``. Asserted: the vector bucket and index (dimension of the
model, metric, non-filterable keys), the trigger wiring that cannot loop (the index function can
write nothing to the bucket; only caption writes and removals reach its queue), least privilege
(s3vectors writes on the index ARN only, InvokeModel on the embeddings model only), the DLQ, the
SSM facts and outputs, and that search=false leaves every one of them out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lambdas.shared import contract
from tests.infra.test_stack import SKIP_BUNDLING, Synth, _as_list, _joined, _s3_grants

pytestmark = pytest.mark.infra

SEARCH_TYPES = ("AWS::S3Vectors::VectorBucket", "AWS::S3Vectors::Index")


def _synth(outdir: Path, context: dict[str, Any], stack_name: str) -> Synth:
    from infra import build_app

    build_app({**SKIP_BUNDLING, **context}, outdir=str(outdir)).synth()
    return Synth(outdir, stack_name)


@pytest.fixture(scope="module")
def on(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return _synth(tmp_path_factory.mktemp("cdk-search-on"), {}, "ImageCaptioning")


@pytest.fixture(scope="module")
def off(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return _synth(tmp_path_factory.mktemp("cdk-search-off"), {"search": "false"}, "ImageCaptioning")


def test_given_search_on_then_nag_has_no_open_findings(on):
    (report,) = on.report["pluginReports"]
    assert report["violations"] == []


def test_given_search_on_then_the_vector_bucket_and_index_match_the_model(on):
    bucket_id, bucket = on.one("AWS::S3Vectors::VectorBucket")
    assert bucket["Properties"]["VectorBucketName"] == "imagecaptioning-vectors"
    index = on.props("AWS::S3Vectors::Index")
    assert index["VectorBucketArn"] == {"Fn::GetAtt": [bucket_id, "VectorBucketArn"]}
    assert index["IndexName"] == contract.DEFAULT_INDEX_NAME
    assert index["DataType"] == "float32"
    assert index["Dimension"] == contract.DEFAULT_EMBEDDING_DIMENSION
    assert index["Dimension"] in contract.EMBEDDING_DIMENSIONS[contract.DEFAULT_EMBEDDING_MODEL_ID]
    assert index["DistanceMetric"] == "cosine"
    assert sorted(index["MetadataConfiguration"]["NonFilterableMetadataKeys"]) == sorted(
        contract.NON_FILTERABLE_METADATA_KEYS
    )
    # folder and tags stay filterable: `imgcap search --folder/--tag` filter on them
    assert {contract.META_FOLDER, contract.META_TAGS}.isdisjoint(contract.NON_FILTERABLE_METADATA_KEYS)


def test_given_the_notifications_then_only_caption_writes_and_removals_reach_the_index_queue(on):
    config = on.props("Custom::S3BucketNotifications")["NotificationConfiguration"]
    queue_id = on.one("AWS::SQS::Queue", "SearchStageQueue")[0]
    to_index = {
        (c["Events"][0], c["Filter"]["Key"]["FilterRules"][0]["Value"])
        for c in config["QueueConfigurations"]
        if c["QueueArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    }
    assert to_index == {
        ("s3:ObjectCreated:*", "captions/"),
        ("s3:ObjectRemoved:*", "captions/"),
        ("s3:ObjectRemoved:*", "images/"),
    }
    # uploads still go to the resize function only (the other Lambda configuration is the
    # backfill's batch/requests/ notification, tests/infra/test_backfill_stage.py)
    on_images = [
        c
        for c in config["LambdaFunctionConfigurations"]
        if c["Filter"]["Key"]["FilterRules"][0]["Value"] == "images/"
    ]
    assert len(on_images) == 1
    assert on_images[0]["Events"] == ["s3:ObjectCreated:*"]
    assert on_images[0]["LambdaFunctionArn"] == {"Fn::GetAtt": [on.function("Resize")[0], "Arn"]}


def test_given_the_index_role_then_it_cannot_write_the_bucket_so_no_trigger_loop(on):
    grants = _s3_grants(on.role_statements("SearchStageIndex"))
    assert grants == {
        "s3:GetObject": {"/captions/*", "/images/*", "/base64_images/*"},
        "s3:ListBucket": {"<bucket>"},
    }
    # and the caption stage has no business with the index
    caption = on.role_statements("CaptionStageCaption")
    assert not any(a.startswith("s3vectors:") for s in caption for a in _as_list(s["Action"]))


def test_given_the_index_role_then_s3vectors_writes_are_on_the_index_arn_only(on):
    index_id = on.one("AWS::S3Vectors::Index")[0]
    statements = [
        s
        for s in on.role_statements("SearchStageIndex")
        if any(a.startswith("s3vectors:") for a in _as_list(s["Action"]))
    ]
    (statement,) = statements
    assert sorted(_as_list(statement["Action"])) == ["s3vectors:DeleteVectors", "s3vectors:PutVectors"]
    assert _as_list(statement["Resource"]) == [{"Fn::GetAtt": [index_id, "IndexArn"]}]


def test_given_the_index_role_then_bedrock_invoke_is_the_embeddings_model_only(on):
    statements = [
        s
        for s in on.role_statements("SearchStageIndex")
        if any(a.startswith("bedrock:") for a in _as_list(s["Action"]))
    ]
    (statement,) = statements
    assert _as_list(statement["Action"]) == ["bedrock:InvokeModel"]
    resources = [_joined(r) for r in _as_list(statement["Resource"])]
    assert resources == [
        "arn:${AWS::Partition}:bedrock:${AWS::Region}::foundation-model/"
        + contract.DEFAULT_EMBEDDING_MODEL_ID
    ]
    # no SSM: the index function's settings are all deploy-time environment variables
    assert not any(
        a.startswith("ssm:") for s in on.role_statements("SearchStageIndex") for a in _as_list(s["Action"])
    )


def test_given_the_index_queue_then_dlq_visibility_and_partial_batch_responses(on):
    queue_id, queue = on.one("AWS::SQS::Queue", "SearchStageQueue")
    dlq_id, _ = on.one("AWS::SQS::Queue", "SearchStageDeadLetterQueue")
    timeout = on.function("SearchStageIndex")[1]["Properties"]["Timeout"]
    assert queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    assert queue["Properties"]["VisibilityTimeout"] >= 6 * timeout
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    (mapping,) = [
        m
        for m in on.of_type("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    ]
    props = mapping["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["ScalingConfig"]["MaximumConcurrency"] == 2
    assert props["BatchSize"] == 10


def test_given_the_index_dlq_then_an_alarm_notifies_the_alarm_topic(on):
    dlq_id = on.one("AWS::SQS::Queue", "SearchStageDeadLetterQueue")[0]
    topic_id = on.one("AWS::SNS::Topic")[0]
    (alarm,) = [
        a["Properties"]
        for a in on.of_type("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Dimensions", [{}])[0].get("Value") == {"Fn::GetAtt": [dlq_id, "QueueName"]}
    ]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    assert alarm["AlarmActions"] == [{"Ref": topic_id}]


def test_given_the_index_function_then_its_environment_is_the_contract_builder(on):
    env = on.function("SearchStageIndex")[1]["Properties"]["Environment"]["Variables"]
    assert env[contract.ENV_SERVICE] == contract.INDEX_SERVICE
    assert env[contract.ENV_VECTOR_BUCKET] == "imagecaptioning-vectors"
    assert env[contract.ENV_INDEX_NAME] == contract.DEFAULT_INDEX_NAME
    assert env[contract.ENV_EMBEDDING_MODEL] == contract.DEFAULT_EMBEDDING_MODEL_ID
    assert env[contract.ENV_EMBEDDING_DIMENSION] == str(contract.DEFAULT_EMBEDDING_DIMENSION)
    assert env[contract.ENV_MAX_CONCURRENCY] == "2"
    props = on.function("SearchStageIndex")[1]["Properties"]
    assert props["Handler"] == contract.INDEX_HANDLER


def test_given_search_on_then_ssm_facts_and_outputs_publish_the_index_coordinates(on):
    params = {
        p["Properties"]["Name"]: p["Properties"]["Value"] for p in on.of_type("AWS::SSM::Parameter").values()
    }
    assert params["/ImageCaptioning/index-name"] == contract.DEFAULT_INDEX_NAME
    assert params["/ImageCaptioning/vector-bucket"] == "imagecaptioning-vectors"
    assert params["/ImageCaptioning/embedding-model"] == contract.DEFAULT_EMBEDDING_MODEL_ID
    assert params["/ImageCaptioning/embedding-dimension"] == str(contract.DEFAULT_EMBEDDING_DIMENSION)
    assert "/ImageCaptioning/collection-endpoint" not in params  # no meaning for S3 Vectors (README)
    assert set(contract.SEARCH_OUTPUT_IDS) <= set(on.template["Outputs"])


def test_given_search_false_then_no_search_resource_parameter_or_output_exists(on, off):
    for resource_type in SEARCH_TYPES:
        assert on.of_type(resource_type)
        assert off.of_type(resource_type) == {}
    assert not [k for k in off.resources if k.startswith("SearchStage")]
    assert set(contract.SEARCH_OUTPUT_IDS).isdisjoint(off.template["Outputs"])
    names = {p["Properties"]["Name"] for p in off.of_type("AWS::SSM::Parameter").values()}
    assert not {
        n for n in names if n.rsplit("/", 1)[-1] in {"index-name", "vector-bucket", "embedding-model"}
    }
    config = off.props("Custom::S3BucketNotifications")["NotificationConfiguration"]
    assert "QueueConfigurations" not in config
    assert "s3vectors" not in json.dumps(off.template)
    (report,) = off.report["pluginReports"]
    assert report["violations"] == []


def test_given_the_index_function_then_the_stack_and_the_local_runtime_give_it_the_same_environment(on):
    from imgcap.local.provision import LocalStack
    from imgcap.local.search import SearchStack, index_function_spec

    stack_env = on.function("SearchStageIndex")[1]["Properties"]["Environment"]["Variables"]
    local = LocalStack("ImageCaptioning", "b", "/ImageCaptioning", "q", "arn", "dlq", "ev", "rf", 20, 720)
    search = SearchStack(
        vector_bucket="imagecaptioning-vectors",
        index_name=contract.DEFAULT_INDEX_NAME,
        index_arn="arn",
        queue_url="q",
        queue_arn="arn",
        dlq_url="d",
        embedding_model_id=contract.DEFAULT_EMBEDDING_MODEL_ID,
        embedding_dimension=contract.DEFAULT_EMBEDDING_DIMENSION,
        embedding_input=contract.DEFAULT_EMBEDDING_INPUT,
    )
    local_env = index_function_spec(local, search, {"AWS_REGION": "us-east-1"}).env
    assert set(stack_env) <= set(local_env)
    scaled = {  # the local runtime scales these down on purpose (no quota on the stand-in)
        contract.ENV_EMBEDDING_RPM,
        contract.ENV_BACKOFF_BASE,
        contract.ENV_BACKOFF_MAX,
        contract.ENV_BEDROCK_READ_TIMEOUT,
        contract.ENV_MAX_CONCURRENCY,
        contract.ENV_SSM_MAX_AGE,
    }
    for name, value in stack_env.items():
        if isinstance(value, str) and name not in scaled:
            assert local_env[name] == value, name


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"embeddingDimension": "512"}, "embeddingModelId/embeddingDimension"),
        ({"embeddingModelId": "amazon.titan-embed-image-v1", "embeddingDimension": "3072"}, "3072"),
        ({"embeddingInput": "video"}, "embeddingInput"),
        ({"distanceMetric": "dot"}, "distanceMetric"),
        ({"indexName": "Bad_Name"}, "indexName"),
        ({"stackName": "S" + "x" * 60}, "vector bucket name"),
    ],
)
def test_given_invalid_search_context_when_parsed_then_the_error_names_the_key(context, message):
    from infra.config import ConfigurationError, StackConfig

    with pytest.raises(ConfigurationError, match=message):
        StackConfig.from_context(context.get)


def test_given_search_false_then_the_checks_of_search_settings_do_not_apply():
    from infra.config import StackConfig

    config = StackConfig.from_context({"search": "false", "embeddingDimension": "512"}.get)
    assert config.search.enabled is False
