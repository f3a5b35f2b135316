"""What a local run is asked to do (LocalOptions, LocalTuning), what it returns, and how it fails."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from imgcap.local.batch_standin import BatchFaults
from imgcap.local.faults import FaultSpec
from imgcap.local.latency import NOVA_PRO, StandinLatency
from lambdas.shared.contract import (
    CONNECT_TIMEOUT_S,
    DEFAULT_STACK_NAME,
    SSM_DEFAULTS,
    BatchLimits,
    auto_concurrency,
    expected_model_latency_s,
)

DEFAULT_RPM = 120.0
DEFAULT_CONCURRENCY = "auto"  # sized from --rpm and the expected model latency
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

    def fitted_to(self, max_latency_s: float) -> LocalTuning:
        """Client timeouts that let a call of ``max_latency_s`` finish (the stack's rules, scaled).

        The read timeout is six times the slowest answer (at most the stack's 50 s): on a busy
        laptop the loopback stand-in can answer late, and a call the client gave up on after the
        model answered is a second paid call when retried. The function timeout holds every
        attempt plus the margin; the claim lease outlasts it.
        """
        read = min(50.0, max(self.bedrock_read_timeout_s, float(math.ceil(6 * max_latency_s))))
        timeout = max(self.caption_timeout_s, self.bedrock_max_attempts * (read + CONNECT_TIMEOUT_S) + 5.0)
        lease = max(self.claim_lease_s, timeout + 15.0)
        return replace(self, bedrock_read_timeout_s=read, caption_timeout_s=timeout, claim_lease_s=lease)


@dataclass(frozen=True, slots=True)
class LocalOptions:
    images: Path
    out: Path
    captioner: str = "standin"  # or "bedrock": the real runtime endpoint with the user's credentials
    rpm: float = DEFAULT_RPM  # the stand-in's quota, and the pacing in SSM unless pacing_rpm is set
    concurrency: int | None = None  # event source mapping maximum concurrency C; None: auto
    concurrency_was_auto: bool = False  # set by resolved()
    batch_size: int = DEFAULT_BATCH_SIZE
    faults: FaultSpec = field(default_factory=FaultSpec)
    stack_name: str = DEFAULT_STACK_NAME
    timeout_s: float = DEFAULT_TIMEOUT_S
    policy: str | None = None
    prompt: str | None = None
    model_id: str | None = None
    keep_running: bool = False
    pacing_rpm: float | None = None  # SSM requests-per-minute when it should differ from the quota
    tpm: float | None = None  # the stand-in's tokens-per-minute quota and SSM tokens-per-minute
    quota_window_s: float = 60.0
    standin_latency: StandinLatency = NOVA_PRO  # --standin-latency nova-pro | fast | SECONDS
    standin_seed: int = 0
    tuning: LocalTuning | None = None  # None: the defaults, fitted to the expected latency
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
    search: bool = False  # the index stage + S3 Vectors stand-in (`imgcap local` turns it on; --no-search)
    # issue 16: "batch" captions through a backfill (Bedrock batch inference on the stand-in)
    mode: str = "online"
    batch_faults: BatchFaults = field(default_factory=BatchFaults)
    batch_limits: BatchLimits = field(default_factory=BatchLimits)

    @property
    def expected_latency_s(self) -> float:
        """Seconds a model call is expected to take: the stand-in's model, or the real model's."""
        if self.captioner == "standin":
            return self.standin_latency.expected_s
        return expected_model_latency_s(self.model_id or SSM_DEFAULTS["model-id"])

    @property
    def effective_tuning(self) -> LocalTuning:
        if self.tuning is not None:
            return self.tuning
        slowest = self.standin_latency.max_s if self.captioner == "standin" else 2 * self.expected_latency_s
        return LocalTuning().fitted_to(slowest)

    @property
    def workers(self) -> int:
        """C: an explicit ``concurrency``, else auto (``resolved`` also caps it by the batches)."""
        if self.concurrency is None:
            return auto_concurrency(self.rpm, self.expected_latency_s)
        return self.concurrency

    def resolved(self, files: int) -> LocalOptions:
        """Concrete concurrency: ``auto`` covers the quota at the expected latency (contract's
        formula), and never more workers than there are batches to give them."""
        if self.concurrency is not None:
            return self
        auto = auto_concurrency(self.rpm, self.expected_latency_s)
        batches = max(1, math.ceil(files / self.batch_size))
        return replace(self, concurrency=min(auto, batches), concurrency_was_auto=True)


@dataclass(frozen=True, slots=True)
class LocalResult:
    summary: dict[str, Any]
    out: Path
    report: Path

    @property
    def exit_code(self) -> int:
        unfinished = ("not_final", "lost", "upload_failed")
        return 0 if all(self.summary.get(k, 1) == 0 for k in unfinished) else 1


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
