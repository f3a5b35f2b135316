"""The two functions of a local run: specs, handler check, the environment the stack gives, SSM tunables."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

from imgcap.local.options import LocalOptions, LocalRunError
from imgcap.local.provision import LocalStack
from imgcap.local.servers import LOCAL_ACCOUNT, LOCAL_REGION
from imgcap.local.workers import FunctionSpec

NAMESPACE = "ImageCaptioning"
RESIZE_SERVICE = "resize-encode"
CAPTION_SERVICE = "caption"

# Environment variables a worker inherits from the user's shell (everything else is set here).
_INHERITED = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TZ",
    "USER",
    "VIRTUAL_ENV",
    "SYSTEMROOT",
)
_INHERITED_AWS = (
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CA_BUNDLE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


def _base_environment(captioner: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _INHERITED or k.startswith(("PYTHON", "LC_"))}
    env.pop("PYTHONSTARTUP", None)
    if captioner == "bedrock":
        env.update({k: os.environ[k] for k in _INHERITED_AWS if k in os.environ})
    return env


def function_specs(
    options: LocalOptions, stack: LocalStack, endpoints: Mapping[str, str]
) -> tuple[FunctionSpec, FunctionSpec]:
    """The two functions with the environment the stack gives them (local values scaled down)."""
    tuning = options.tuning
    common = {
        **_base_environment(options.captioner),
        **endpoints,
        "AWS_REGION": endpoints.get("AWS_DEFAULT_REGION", LOCAL_REGION),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "BUCKET_NAME": stack.bucket,
        "SSM_PREFIX": stack.ssm_prefix,
        "SSM_MAX_AGE_SECONDS": str(tuning.ssm_max_age_s),
        "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    common.setdefault("AWS_DEFAULT_REGION", common["AWS_REGION"])
    resize_name = f"{options.stack_name}-resize-encode"
    caption_name = f"{options.stack_name}-caption"
    resize = FunctionSpec(
        name=resize_name,
        handler=options.resize_handler,
        env={
            **common,
            "AWS_LAMBDA_FUNCTION_NAME": resize_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(tuning.resize_memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{resize_name}",
            "POWERTOOLS_SERVICE_NAME": RESIZE_SERVICE,
            "QUEUE_URL": stack.queue_url,
        },
        memory_mb=tuning.resize_memory_mb,
        timeout_s=tuning.resize_timeout_s,
        region=common["AWS_REGION"],
        account=LOCAL_ACCOUNT,
    )
    caption = FunctionSpec(
        name=caption_name,
        handler=options.caption_handler,
        env={
            **common,
            "AWS_LAMBDA_FUNCTION_NAME": caption_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(tuning.caption_memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{caption_name}",
            "POWERTOOLS_SERVICE_NAME": CAPTION_SERVICE,
            "MAX_CONCURRENCY": str(options.concurrency),
            "THROTTLE_BACKOFF_BASE_SECONDS": f"{tuning.throttle_backoff_base_s:g}",
            "THROTTLE_BACKOFF_MAX_SECONDS": f"{tuning.throttle_backoff_max_s:g}",
            "MODEL_ERROR_MAX_ATTEMPTS": str(tuning.model_error_max_attempts),
            "BEDROCK_READ_TIMEOUT_SECONDS": f"{tuning.bedrock_read_timeout_s:g}",
            "BEDROCK_MAX_ATTEMPTS": str(tuning.bedrock_max_attempts),
            "CLAIM_LEASE_SECONDS": f"{tuning.claim_lease_s:g}",
        },
        memory_mb=tuning.caption_memory_mb,
        timeout_s=tuning.caption_timeout_s,
        region=common["AWS_REGION"],
        account=LOCAL_ACCOUNT,
    )
    return resize, caption


def ssm_tunables(options: LocalOptions) -> dict[str, str]:
    """The SSM tunables a run overrides: pacing rpm, and the --policy/--prompt/--model-id options."""
    values = {"requests-per-minute": f"{options.pacing_rpm or options.rpm:g}"}
    if options.policy:
        values["resize-policy"] = options.policy
    if options.prompt:
        values["prompt"] = options.prompt
    if options.model_id:
        values["model-id"] = options.model_id
    return values


def check_handlers(options: LocalOptions) -> None:
    """Fail before anything starts when a handler module cannot be imported."""
    for path in (options.resize_handler, options.caption_handler):
        module = path.rpartition(".")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise LocalRunError(f"handler module {module} not found (run from the project directory)")
