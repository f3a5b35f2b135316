"""``imgcap local`` end to end on the demo sample set: captions, error records, summary, report, logs."""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from imgcap.cli import main
from imgcap.local.provision import LocalStack
from imgcap.local.runtime import LocalOptions, function_specs, ssm_tunables
from imgcap.local.servers import endpoint_environment
from imgcap.local.standin import STANDIN_MARK
from imgcap.samples import SAMPLES, write_samples
from tests.e2e.conftest import Run, run_pipeline
from tests.schemas import assert_valid

pytestmark = pytest.mark.e2e

CAPTION_FIELDS = {
    "schema_version",
    "caption",
    "model_id",
    "prompt",
    "inference",
    "usage",
    "stop_reason",
    "latency_ms",
    "source",
    "encoded_key",
    "resize",
    "uploaded_at",
    "captioned_at",
    "receive_count",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    """Given the sample set (a dozen files, one corrupt, one text, names with ' ' and '+')."""
    images = tmp_path_factory.mktemp("images")
    write_samples(images)
    run = run_pipeline(images, tmp_path_factory.mktemp("out"))
    return images, run


def test_every_sample_reaches_a_final_state_and_nothing_is_lost(demo: tuple[Path, Run]) -> None:
    _, run = demo
    summary = run.summary

    assert run.result.exit_code == 0
    assert summary["lost"] == 0
    assert summary["not_final"] == 0
    assert summary["not_final_keys"] == summary["lost_keys"] == []
    assert summary["images"] == len(SAMPLES) == 12
    assert summary["captioned"] == sum(s.expect_caption for s in SAMPLES) == 10
    assert summary["rejected"] == 2
    assert summary["dead_lettered"] == 0
    assert summary["resize_failed"] == 0
    assert summary["rejected_by_code"] == {"corrupt_image": 1, "unsupported_format": 1}


def test_every_image_has_a_complete_caption_record_tied_to_its_upload(demo: tuple[Path, Run]) -> None:
    images, run = demo

    for sample in (s for s in SAMPLES if s.expect_caption):
        record = run.caption(sample.name)
        assert set(record) >= CAPTION_FIELDS, sample.name
        assert record["caption"].startswith(STANDIN_MARK)
        assert record["source"]["key"] == f"images/{sample.name}"
        # a single-part upload's ETag is the MD5 of its bytes: the caption belongs to this exact file
        assert record["source"]["etag"] == hashlib.md5((images / sample.name).read_bytes()).hexdigest()
        assert record["encoded_key"] == f"base64_images/{sample.name}.txt"
        assert record["usage"]["input_tokens"] > 1000
        assert record["usage"]["output_tokens"] > 10
        assert set(record["inference"]) == {"maxTokens", "temperature", "topP", "topK"}
        assert record["resize"] == {"policy": "pad", "width": 1280, "height": 720}  # the defaults


def test_names_with_space_and_plus_survive_the_url_encoded_s3_event(demo: tuple[Path, Run]) -> None:
    _, run = demo

    assert run.caption("trips/beach day.jpg")["source"]["key"] == "images/trips/beach day.jpg"
    assert run.caption("forest+lake.webp")["source"]["key"] == "images/forest+lake.webp"


def test_the_corrupt_and_the_text_file_get_error_records(demo: tuple[Path, Run]) -> None:
    _, run = demo

    broken, text = run.error("broken.jpg"), run.error("notes.txt")

    assert (broken["stage"], broken["error_code"], broken["retryable"]) == ("resize", "corrupt_image", False)
    assert (text["stage"], text["error_code"]) == ("resize", "unsupported_format")
    assert not (run.out / "captions" / "broken.jpg.json").exists()


def test_summary_metric_totals_match_the_records_and_the_standin(demo: tuple[Path, Run]) -> None:
    _, run = demo
    summary = run.summary
    totals = summary["metrics"]["totals"]

    assert totals["ImagesReceived"] == summary["images"]
    assert totals["ImagesResized"] == summary["captioned"]
    assert totals["ImagesRejected"] == summary["rejected"]
    assert summary["metrics"]["rejections_by_code"] == summary["rejected_by_code"]
    assert totals["CaptionsWritten"] == summary["captioned"]
    assert totals["ModelCalls"] == summary["model_calls"] == summary["paid_calls"] == summary["captioned"]
    assert totals["InputTokens"] == summary["input_tokens"] == summary["standin"]["input_tokens"]
    assert totals["OutputTokens"] == summary["output_tokens"] == summary["standin"]["output_tokens"]
    assert summary["duplicate_paid_calls"] == 0
    assert summary["throttled"] == 0
    assert summary["captions_per_minute_run"] > 0
    assert summary["captions_per_minute_steady"] > 0
    assert 0 < summary["upload_to_caption_p50_s"] <= summary["upload_to_caption_p95_s"]
    for name in ("images", "captioned", "rejected", "dead_lettered", "lost", "model_calls", "throttled"):
        assert isinstance(summary[name], int), name
    for name in ("duplicates_avoided", "input_tokens", "output_tokens", "elapsed_s", "pacing_rpm"):
        assert name in summary


def test_summary_json_and_every_record_in_out_conform_to_their_schemas(demo: tuple[Path, Run]) -> None:
    """The real outputs of a run against docs/schemas/, and the states add up to the images."""
    _, run = demo
    written = json.loads((run.out / "summary.json").read_text(encoding="utf-8"))
    assert written == run.summary
    assert_valid("summary", written)
    states = ("captioned", "rejected", "dead_lettered", "resize_failed", "upload_failed", "not_final", "lost")
    assert sum(written[s] for s in states) == written["images"]
    assert written["standin"]["first_call_at"] <= written["finished_at"]  # ISO 8601 UTC sorts as time
    captions = sorted((run.out / "captions").rglob("*.json"))
    errors = sorted((run.out / "errors").rglob("*.json"))
    assert len(captions) == written["captioned"]
    assert len(errors) == written["rejected"]
    for path in captions:
        assert_valid("caption-record", json.loads(path.read_text(encoding="utf-8")), str(path))
    for path in errors:
        assert_valid("error-record", json.loads(path.read_text(encoding="utf-8")), str(path))


def test_the_progress_line_and_the_final_line_show_the_same_labelled_rates(demo: tuple[Path, Run]) -> None:
    _, run = demo
    summary = run.summary
    lines = run.progress.splitlines()
    done = next(line for line in lines if line.startswith("done: "))
    last_live = [line for line in lines if line.startswith("local: ")][-1]
    rates = re.compile(r"[0-9.-]+ captions/min over the run, [0-9.-]+ steady")
    shown = f"{summary['captions_per_minute_run']:.1f} captions/min over the run, "
    shown += f"{summary['captions_per_minute_steady']:.1f} steady"
    assert rates.findall(done) == [shown]
    assert rates.findall(last_live) == [shown]  # the live line's last update agrees with the end


def test_report_shows_every_upload_offline(demo: tuple[Path, Run]) -> None:
    _, run = demo
    page = (run.out / "report.html").read_text(encoding="utf-8")

    for sample in SAMPLES:
        assert html.escape(f"images/{sample.name}") in page, sample.name
    thumbs = list((run.out / "report_files" / "thumbs").iterdir())
    assert len(thumbs) >= 10  # every captioned image has a thumbnail file beside the page
    assert all(f"report_files/thumbs/{t.name}" in page for t in thumbs)
    assert "corrupt_image" in page
    assert "unsupported_format" in page
    assert "http://" not in page
    assert "https://" not in page


def test_logs_and_progress_are_written(demo: tuple[Path, Run]) -> None:
    _, run = demo

    resize_logs, caption_logs = run.log("resize-encode"), run.log("caption")
    invocations = run.log("invocations")

    assert {line["correlation_id"] for line in resize_logs if "correlation_id" in line} >= {
        f"images/{s.name}" for s in SAMPLES
    }
    assert all(line["service"] == "caption" for line in caption_logs)
    assert {i["function"] for i in invocations} == {
        "ImageCaptioning-resize-encode",
        "ImageCaptioning-caption",
    }
    assert "uploaded 12/12" in run.progress
    assert "\r" not in run.progress
    assert "report:" in run.progress


def test_cli_rejects_a_bad_fault_spec_and_a_missing_folder_before_starting(tmp_path: Path) -> None:
    assert (
        main(["local", "--images", str(tmp_path), "--out", str(tmp_path / "o"), "--faults", "bogus=1"]) == 2
    )
    assert main(["local", "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2


def _stack() -> LocalStack:
    return LocalStack(
        stack_name="EnvTest",
        bucket="envtest-images",
        ssm_prefix="/EnvTest",
        queue_url="http://127.0.0.1:1/123456789012/EnvTest-caption",
        queue_arn="arn:aws:sqs:us-east-1:123456789012:EnvTest-caption",
        dlq_url="http://127.0.0.1:1/123456789012/EnvTest-caption-dlq",
        events_queue_url="http://127.0.0.1:1/123456789012/EnvTest-s3-events",
        resize_failure_queue_url="http://127.0.0.1:1/123456789012/EnvTest-resize-failures",
        max_receive_count=20,
        visibility_timeout_s=180,
    )


def test_functions_get_the_lambda_environment_pointing_at_loopback(tmp_path: Path) -> None:
    options = LocalOptions(images=tmp_path, out=tmp_path / "o", stack_name="EnvTest", concurrency=3)

    resize, caption = function_specs(
        options, _stack(), endpoint_environment("http://127.0.0.1:1", "http://127.0.0.1:2")
    )

    assert resize.env["QUEUE_URL"].endswith("/EnvTest-caption")
    assert resize.env["POWERTOOLS_SERVICE_NAME"] == "resize-encode"
    assert resize.env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "1769"
    assert caption.env["POWERTOOLS_SERVICE_NAME"] == "caption"
    assert caption.env["MAX_CONCURRENCY"] == "3"
    # Fitted to the default stand-in latency (nova-pro): six times its slowest answer (5.2 s).
    assert caption.env["BEDROCK_READ_TIMEOUT_SECONDS"] == "32"
    assert caption.env["THROTTLE_BACKOFF_MAX_SECONDS"] == "8"  # scaled down from the stack's 300
    for env in (resize.env, caption.env):
        assert env["BUCKET_NAME"] == "envtest-images"
        assert env["SSM_PREFIX"] == "/EnvTest"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "ImageCaptioning"
        assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
        assert env["AWS_ENDPOINT_URL_S3"] == env["AWS_ENDPOINT_URL_SQS"] == "http://127.0.0.1:1"
        assert env["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] == "http://127.0.0.1:2"
        assert env["AWS_ACCESS_KEY_ID"] == "local-testing"


def test_with_the_real_bedrock_only_moto_services_are_redirected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "my-profile")
    options = LocalOptions(images=tmp_path, out=tmp_path / "o", captioner="bedrock")

    _, caption = function_specs(options, _stack(), endpoint_environment("http://127.0.0.1:1", None))

    assert "AWS_ENDPOINT_URL_BEDROCK_RUNTIME" not in caption.env
    assert caption.env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:1"
    assert caption.env["AWS_PROFILE"] == "my-profile"  # the user's own credentials reach Bedrock


def test_overrides_become_ssm_tunables(tmp_path: Path) -> None:
    options = LocalOptions(
        images=tmp_path,
        out=tmp_path,
        rpm=90,
        policy="crop",
        prompt="Describe it.",
        model_id="us.amazon.nova-lite-v1:0",
    )

    assert ssm_tunables(options) == {
        "requests-per-minute": "90",
        "resize-policy": "crop",
        "prompt": "Describe it.",
        "model-id": "us.amazon.nova-lite-v1:0",
    }
    assert ssm_tunables(replace(options, pacing_rpm=600))["requests-per-minute"] == "600"


def test_saved_log_queries_ask_for_fields_the_functions_really_log(demo: tuple[Path, Run]) -> None:
    """Given the stack's saved Logs Insights queries, when the real handlers log a run,
    then every field a query selects appears in the functions' JSON logs (no query reads nothing)."""
    from infra.constructs import monitoring

    _, run = demo
    logged: set[str] = set()
    for line in [*run.log("resize-encode"), *run.log("caption")]:
        logged.update(line)
    queries = [value for name, value in vars(monitoring).items() if name.startswith("_LOG_QUERY_")]
    assert len(queries) >= 2
    for query in queries:
        fields_line = next(line for line in query.splitlines() if line.startswith("fields "))
        fields = [f.strip() for f in fields_line.removeprefix("fields ").split(",")]
        wanted = {f for f in fields if not f.startswith("@")}
        assert wanted, query
        assert wanted <= logged, f"not in the logs: {sorted(wanted - logged)}"
