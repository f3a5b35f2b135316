"""What a local run is asked to do (LocalOptions, LocalTuning), what it returns, and how it fails."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgcap.local.faults import FaultSpec
from lambdas.shared.contract import DEFAULT_STACK_NAME

DEFAULT_RPM = 120.0
DEFAULT_CONCURRENCY = 4
DEFAULT_BATCH_SIZE = 4
DEFAULT_TIMEOUT_S = 600.0
RESIZE_HANDLER = "lambdas.resize.handler.lambda_handler"
CAPTION_HANDLER = "lambdas.caption.handler.lambda_handler"


class LocalRunError(RuntimeError):
    """The run cannot start (bad input directory, missing handler module, ...)."""


@dataclass(frozen=True, slots=True)
class LocalTuning:
    """Function and queue settings, scaled down from the stack's for a local run."""

    resize_memory_mb: int = 1769
    resize_timeout_s: float = 60.0
    resize_concurrency: int = 2
    caption_memory_mb: int = 512
    caption_timeout_s: float = 30.0
    bedrock_read_timeout_s: float = 2.0  # the stand-in's timeout fault holds longer than this
    bedrock_max_attempts: int = 2
    throttle_backoff_base_s: float = 1.0  # stack: 10 s
    throttle_backoff_max_s: float = 8.0  # stack: 300 s
    model_error_max_attempts: int = 3
    claim_lease_s: float = 45.0  # outlasts the caption timeout, as in the stack
    max_receive_count: int = 20
    visibility_timeout_s: int | None = None  # default: 6x the caption timeout, as in the stack
    async_retry_delays_s: tuple[float, float] = (1.0, 2.0)  # Lambda: about 1 and 2 minutes
    ssm_max_age_s: int = 60

    @property
    def queue_visibility_timeout_s(self) -> int:
        if self.visibility_timeout_s is not None:
            return self.visibility_timeout_s
        return max(1, math.ceil(6 * self.caption_timeout_s))


@dataclass(frozen=True, slots=True)
class LocalOptions:
    images: Path
    out: Path
    captioner: str = "standin"  # or "bedrock": the real runtime endpoint with the user's credentials
    rpm: float = DEFAULT_RPM  # the stand-in's quota, and the pacing in SSM unless pacing_rpm is set
    concurrency: int = DEFAULT_CONCURRENCY  # event source mapping maximum concurrency C
    batch_size: int = DEFAULT_BATCH_SIZE
    faults: FaultSpec = field(default_factory=FaultSpec)
    stack_name: str = DEFAULT_STACK_NAME
    timeout_s: float = DEFAULT_TIMEOUT_S
    policy: str | None = None
    prompt: str | None = None
    model_id: str | None = None
    keep_running: bool = False
    pacing_rpm: float | None = None  # SSM requests-per-minute when it should differ from the quota
    quota_window_s: float = 60.0
    standin_latency_s: tuple[float, float] = (0.3, 0.8)
    standin_seed: int = 0
    tuning: LocalTuning = field(default_factory=LocalTuning)
    replay_s3_events: int = 0  # deliver every S3 event this many extra times (at-least-once)
    duplicate_caption_messages: bool = False  # deliver every caption message a second time
    batching_window_s: float = 0.0  # the event source mapping's MaximumBatchingWindowInSeconds
    settle_s: float = 20.0  # after all uploads are final, wait at most this long for queues to drain
    caption_handler: str = CAPTION_HANDLER
    resize_handler: str = RESIZE_HANDLER
    # issue 15: SSM caption-format / service-tier, /<stack>/prompts/<folder>, the opt-in object tags
    caption_format: str | None = None
    service_tier: str | None = None
    folder_prompts: tuple[tuple[str, str], ...] = ()  # (folder, prompt or JSON), as in SSM
    write_object_tags: bool = False


@dataclass(frozen=True, slots=True)
class LocalResult:
    summary: dict[str, Any]
    out: Path
    report: Path

    @property
    def exit_code(self) -> int:
        return 0 if self.summary.get("lost", 1) == 0 else 1


def check_bedrock_credentials() -> None:
    """``--captioner bedrock`` calls the real service: fail early when no credentials are found."""
    import boto3

    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise LocalRunError(
            "--captioner bedrock needs AWS credentials with bedrock:InvokeModel (AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and model access enabled; none were found"
        )
    if not session.region_name:
        raise LocalRunError("--captioner bedrock needs a region: set AWS_REGION or AWS_DEFAULT_REGION")
