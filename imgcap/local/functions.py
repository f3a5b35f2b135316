"""The two functions of a local run: specs, handler check, the environment the stack gives, SSM tunables."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

from imgcap.local.options import LocalOptions, LocalRunError, LocalTuning
from imgcap.local.provision import LocalStack
from imgcap.local.servers import LOCAL_ACCOUNT, LOCAL_REGION
from imgcap.local.workers import FunctionSpec
from lambdas.shared import contract
from lambdas.shared.contract import CAPTION_SERVICE, RESIZE_SERVICE, CaptionKnobs

__all__ = ["CAPTION_SERVICE", "RESIZE_SERVICE"]

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


LOCAL_LOG_LEVEL = "INFO"


def caption_knobs(tuning: LocalTuning) -> CaptionKnobs:
    """The caption function's deploy-time knobs, scaled down for a local run."""
    return CaptionKnobs(
        throttle_backoff_base_s=tuning.throttle_backoff_base_s,
        throttle_backoff_max_s=tuning.throttle_backoff_max_s,
        model_error_max_attempts=tuning.model_error_max_attempts,
        bedrock_read_timeout_s=tuning.bedrock_read_timeout_s,
        bedrock_max_attempts=tuning.bedrock_max_attempts,
        claim_lease_s=tuning.claim_lease_s,
    )


def _spec(
    name: str,
    handler: str,
    memory_mb: int,
    timeout_s: float,
    runtime: Mapping[str, str],
    stack_env: Mapping[str, str],
) -> FunctionSpec:
    """One function: what Lambda sets in every execution environment, then what the stack sets."""
    lambda_env = {
        "AWS_LAMBDA_FUNCTION_NAME": name,
        contract.ENV_MEMORY: str(memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
    }
    return FunctionSpec(
        name=name,
        handler=handler,
        env={**runtime, **lambda_env, **stack_env},
        memory_mb=memory_mb,
        timeout_s=timeout_s,
        region=runtime["AWS_REGION"],
        account=LOCAL_ACCOUNT,
    )


def runtime_environment(options: LocalOptions, endpoints: Mapping[str, str]) -> dict[str, str]:
    """What Lambda itself sets in every execution environment (plus the loopback endpoints)."""
    runtime = {
        **_base_environment(options.captioner),
        **endpoints,
        "AWS_REGION": endpoints.get("AWS_DEFAULT_REGION", LOCAL_REGION),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "PYTHONUNBUFFERED": "1",
    }
    runtime.setdefault("AWS_DEFAULT_REGION", runtime["AWS_REGION"])
    return runtime


def function_specs(
    options: LocalOptions, stack: LocalStack, endpoints: Mapping[str, str]
) -> tuple[FunctionSpec, FunctionSpec]:
    """The two functions with the environment the stack gives them (local values scaled down)."""
    tuning = options.effective_tuning
    # What Lambda itself sets, then what the stack sets: the contract's builder for each function.
    runtime = runtime_environment(options, endpoints)
    resize_name = f"{options.stack_name}-{RESIZE_SERVICE}"
    caption_name = f"{options.stack_name}-{CAPTION_SERVICE}"
    resize = _spec(
        resize_name,
        options.resize_handler,
        tuning.resize_memory_mb,
        tuning.resize_timeout_s,
        runtime,
        contract.resize_environment(
            bucket=stack.bucket,
            queue_url=stack.queue_url,
            ssm_prefix=stack.ssm_prefix,
            ssm_max_age_s=tuning.ssm_max_age_s,
            log_level=LOCAL_LOG_LEVEL,
        ),
    )
    caption = _spec(
        caption_name,
        options.caption_handler,
        tuning.caption_memory_mb,
        tuning.caption_timeout_s,
        runtime,
        contract.caption_environment(
            bucket=stack.bucket,
            ssm_prefix=stack.ssm_prefix,
            ssm_max_age_s=tuning.ssm_max_age_s,
            log_level=LOCAL_LOG_LEVEL,
            max_concurrency=options.workers,
            knobs=caption_knobs(tuning),
            allowed_model_ids=contract.default_allowed_model_ids(
                options.model_id or contract.SSM_DEFAULTS["model-id"]
            ),
            write_object_tags=options.write_object_tags,
        ),
    )
    return resize, caption


def ssm_tunables(options: LocalOptions) -> dict[str, str]:
    """The SSM tunables a run overrides: pacing rpm, and the --policy/--prompt/--model-id options."""
    values = {"requests-per-minute": f"{options.pacing_rpm or options.rpm:g}"}
    if options.tpm:
        values["tokens-per-minute"] = f"{options.tpm:g}"
    if options.policy:
        values["resize-policy"] = options.policy
    if options.prompt:
        values["prompt"] = options.prompt
    if options.model_id:
        values["model-id"] = options.model_id
    if options.caption_format:
        values["caption-format"] = options.caption_format
    if options.service_tier:
        values["service-tier"] = options.service_tier
    for folder, prompt in options.folder_prompts:
        values[f"{contract.PROMPTS_PARAM_PATH}/{folder.strip('/')}"] = prompt
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
